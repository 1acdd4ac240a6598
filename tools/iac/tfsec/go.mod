module github.com/slm-mesh/slm-mesh/tools/iac/tfsec

go 1.26
