# slm-mesh — the commands a developer and CI use. `make help` lists them.

# llama.cpp is compiled through cgo. Without these flags ggml is built for
# baseline x86-64 (no AVX2/FMA/F16C) and runs several times slower. The
# binaries built here run here, so they target this machine's own CPU (with
# AVX-512, 4-bit prompts are ~1.7× faster than with AVX2); ARCH=x86-64-v3
# builds for any CPU with AVX2. tools/release builds for the nodes, with a
# portable level of its own (-arch).
# -Wno-stringop-overflow silences a known false positive that floods the
# build log from ggml's repack.cpp. -DGGML_USE_CPU_REPACK turns on ggml's
# repacked (interleaved) kernels for 4-bit weights, as llama.cpp's and
# ollama's own builds do; the ollama Go module's cgo files leave it out
# (docs/build.md). internal/localmesh uses the same flags: any difference
# would rebuild llama.cpp (~10 minutes on 2 CPUs).
ARCH ?= native
CGO_CFLAGS ?= -O3 -march=$(ARCH) -Wno-stringop-overflow -DGGML_USE_CPU_REPACK
CGO_CXXFLAGS ?= -O3 -march=$(ARCH) -Wno-stringop-overflow -DGGML_USE_CPU_REPACK
# The miniaudio stand-in: as root, `make setup` installs it where the
# compiler looks anyway; otherwise it is found in the checkout. The choice
# depends only on who runs make, not on whether setup has run yet, so the
# flags (and Go's build cache) are the same on every run.
MINIAUDIO_SYSTEM_HEADER ?= /usr/local/include/miniaudio/miniaudio.h
ifneq ($(shell id -u),0)
ifeq ($(wildcard $(MINIAUDIO_SYSTEM_HEADER)),)
CGO_CPPFLAGS += -I$(CURDIR)/third_party
endif
endif
export CGO_CFLAGS CGO_CXXFLAGS CGO_CPPFLAGS
# -trimpath keeps the build cache valid whichever folder this is cloned into.
GOFLAGS += -trimpath
export GOFLAGS

CONSUL_BIN ?= $(CURDIR)/.cache/bin/consul
export SLM_CONSUL_BIN = $(CONSUL_BIN)
NOMAD_BIN ?= $(CURDIR)/.cache/bin/nomad

.PHONY: help setup build consul nomad box run test bench bench-ollama load fuzz iac cgo-env release

help:
	@echo "make run     run the whole mesh on this machine (SLM_MODEL=/path/model.gguf to pick a model)"
	@echo "make test    run every test (builds the Consul agent for the discovery tests)"
	@echo "make bench   run the benchmarks"
	@echo "make fuzz    run every fuzz target for 30s (FUZZTIME=2m for longer)"
	@echo "make bench-ollama  the mesh against ollama on the same model, side by side"
	@echo "make load    64 checked clients for 60s through a local mesh (LOAD_MODEL=/path/model.gguf)"
	@echo "make build   build the three service binaries into .cache/bin"
	@echo "make box     the production cluster in network namespaces on this machine, deployed and answering (root)"

setup:
	@sh tools/setup.sh

build: setup
	go build -o .cache/bin/ ./services/...

consul:
	@sh tools/consul/build.sh $(CONSUL_BIN)

# nomad: the Nomad v1.6.3 agent (tools/nomad), for the cluster in a box.
nomad:
	@sh tools/nomad/build.sh $(NOMAD_BIN)

# cgo-env: the cgo flags every build here uses (a test checks they never
# change between runs).
cgo-env:
	@echo "CGO_CFLAGS=$(CGO_CFLAGS)"
	@echo "CGO_CXXFLAGS=$(CGO_CXXFLAGS)"
	@echo "CGO_CPPFLAGS=$(strip $(CGO_CPPFLAGS))"

run: setup
	go build -o .cache/bin/local ./tools/local && exec .cache/bin/local

# The fuzzing in `make test` is bounded by a count of inputs, not a time:
# go1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when a time budget ends on a busy machine (golang/go#75804,
# fixed in go1.27), which is no finding and would turn CI red.
# The cluster in a box (e2e/cluster*_test.go) runs on its own, last: its
# twenty agents and their tasks on the same CPUs would slow the e2e tests
# that bound a recovery in time, and one box runs at a time.
BOX_TESTS = ^TestCluster
test: FUZZTIME = 10000x
test: setup consul nomad
	go vet ./...
	go test -count=1 -timeout 30m -skip '$(BOX_TESTS)' ./...
	$(fuzz-pure-go)
	sh tools/iac/check.sh
	go test -count=1 -timeout 60m -run '$(BOX_TESTS)' ./e2e/

# iac: the offline checks of the Terraform code (OpenTofu fmt/validate/test,
# tfsec), with the tools built once from the Go module proxy.
iac:
	sh tools/iac/check.sh

# release: the three services built for the cluster's nodes (linux/amd64,
# version-stamped), uploaded with their SHA256SUMS to the artifacts bucket
# by the aws CLI, and release.vars.hcl written for tools/submit. E.g.
#   make release RELEASE_ARGS="-bucket $$(terraform -chdir=terraform/aws output -raw artifacts_bucket) -region $$(terraform -chdir=terraform/aws output -raw region)"
# add -model PATH_OR_URL -model-sha256 HEX to ship the model in the bucket too.
# -upload=false only builds; docs/nomad.md has the rest.
release:
	go run ./tools/release $(RELEASE_ARGS)

# box: the production cluster in network namespaces on this machine (as
# root): three servers and clients of each role with the configuration
# Terraform renders, the services released into the AWS emulator's S3 and
# submitted with production variables, then one chat completion per
# gateway. `go run ./tools/box down` removes it (tools/box/README.md).
# BOX_ARGS go to `box up` (e.g. -no-deploy).
box: consul nomad
	go run ./tools/box up $(BOX_ARGS)

# bench: the RPC benchmarks, the engine on the full-size random-weight
# gemma3-270m (generated once), then tools/bench through a local mesh on the
# same model. BENCH_THREADS=2 pins llama.cpp's threads; BENCH_ARGS go to
# `tools/bench sweep` (e.g. BENCH_ARGS="-requests 16 -prompts 128").
bench: BENCH_MODEL ?= $(CURDIR)/.cache/models/gemma3-270m-random.gguf
bench: BENCH_THREADS ?= $(shell nproc)
bench: ENGINE_BENCHTIME ?= 3x
bench: build
	go test -run '^$$' -bench . -benchtime 3s ./internal/rpc/
	@test -f $(BENCH_MODEL) || { mkdir -p $(dir $(BENCH_MODEL)) && go run ./tools/gguf -preset gemma3-270m -o $(BENCH_MODEL); }
	SLM_BENCH_MODEL=$(BENCH_MODEL) SLM_BENCH_THREADS=$(BENCH_THREADS) \
		go test -run '^$$' -bench . -benchtime $(ENGINE_BENCHTIME) -timeout 30m ./internal/engine/
	go run ./tools/bench sweep -mesh $(BENCH_MODEL) -threads $(BENCH_THREADS) $(BENCH_ARGS)

# bench-ollama: the same workload against ollama (built from the module
# proxy, see tools/bench/ollama.sh) as A and a local mesh as B, alternately;
# the B/A column is slm-mesh's speed relative to ollama.
bench-ollama: BENCH_MODEL ?= $(CURDIR)/.cache/models/gemma3-270m-random.gguf
bench-ollama: BENCH_THREADS ?= $(shell nproc)
bench-ollama: build
	@test -f $(BENCH_MODEL) || { mkdir -p $(dir $(BENCH_MODEL)) && go run ./tools/gguf -preset gemma3-270m -o $(BENCH_MODEL); }
	THREADS=$(BENCH_THREADS) sh tools/bench/ollama.sh $(BENCH_MODEL) \
		sweep -mesh $(BENCH_MODEL) -mesh-as b -threads $(BENCH_THREADS) $(BENCH_ARGS)

# load: tools/load through a local mesh, every response checked and the
# processes' growth judged (docs/RELIABILITY.md). LOAD_ARGS go to the tool.
load: LOAD_MODEL ?= $(or $(SLM_TEST_MODEL),$(CURDIR)/../shared/models/stories260K.gguf)
load: build
	go run ./tools/load -mesh -no-build -model $(LOAD_MODEL) -threads 1 -clients 64 -duration 60s $(LOAD_ARGS)

# fuzz: every fuzz target for FUZZTIME (default 30s) each; `make test`
# gives the pure-Go ones 10000 inputs each (a few seconds). A bare "context
# deadline exceeded" with no failing input written is the coordinator race
# above, not a finding. Their seed corpora are in each package's
# testdata/fuzz.
fuzz: FUZZTIME ?= 30s
fuzz: setup
	$(fuzz-all)

# The fuzz targets run one by one: go test fuzzes one per run. The
# engine's are apart: fuzzing instruments the llama.cpp package too, a
# ~6-minute rebuild of it on a cold cache, so `make test` runs their seed
# corpora as ordinary tests (every `go test` does) and fuzzes them only here.
define fuzz-pure-go
	go test -count=1 -run '^$$' -fuzz '^FuzzDecodeChatRequest$$' -fuzztime $(FUZZTIME) ./internal/openai/
	go test -count=1 -run '^$$' -fuzz '^FuzzStreamWriter$$' -fuzztime $(FUZZTIME) ./internal/openai/
	go test -count=1 -run '^$$' -fuzz '^FuzzDecodeFrames$$' -fuzztime $(FUZZTIME) ./internal/rpc/
endef
define fuzz-all
	$(fuzz-pure-go)
	go test -count=1 -run '^$$' -fuzz '^FuzzTextStream$$' -fuzztime $(FUZZTIME) ./internal/engine/
	go test -count=1 -run '^$$' -fuzz '^FuzzPrompt$$' -fuzztime $(FUZZTIME) ./internal/engine/
endef
