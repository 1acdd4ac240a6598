package cli

// Version is the slm-mesh version of the binary. Release builds stamp it
// (go run ./tools/release: -ldflags "-X ...cli.Version=v1.2.3"); every
// other build says "dev". The services print it with -version.
var Version = "dev"
