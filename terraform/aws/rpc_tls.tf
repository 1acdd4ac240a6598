# --- RPC between tiers ------------------------------------------------------------
# The gateway calls callers and the caller calls inference over TLS across
# hosts. The CA is the tiers' own, never the agents': a task holds its
# tier's key, and a certificate of the agents' CA would open Nomad's API
# (verify_https_client). Each private tier's certificate names its Consul
# service, which its clients check rather than the address they dial. The
# servers' bootstrap copies them from SSM into each job's Nomad Variable.

locals {
  rpc_tiers = toset(["slm-caller", "slm-inference"])
}

resource "tls_private_key" "rpc_ca" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_self_signed_cert" "rpc_ca" {
  private_key_pem       = tls_private_key.rpc_ca.private_key_pem
  is_ca_certificate     = true
  validity_period_hours = 5 * 365 * 24
  allowed_uses          = ["cert_signing", "crl_signing", "digital_signature"]

  subject {
    common_name  = "${var.cluster_name} RPC CA"
    organization = "slm-mesh"
  }
}

resource "tls_private_key" "rpc" {
  for_each = local.rpc_tiers

  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "rpc" {
  for_each = local.rpc_tiers

  private_key_pem = tls_private_key.rpc[each.key].private_key_pem
  dns_names       = [each.key]

  subject {
    common_name = each.key
  }
}

resource "tls_locally_signed_cert" "rpc" {
  for_each = local.rpc_tiers

  cert_request_pem   = tls_cert_request.rpc[each.key].cert_request_pem
  ca_private_key_pem = tls_private_key.rpc_ca.private_key_pem
  ca_cert_pem        = tls_self_signed_cert.rpc_ca.cert_pem

  # Renewed by an apply in the last 90 days; the jobs restart on the new
  # certificate once the servers' bootstrap has written it again.
  validity_period_hours = 2 * 365 * 24
  early_renewal_hours   = 90 * 24
  allowed_uses          = ["digital_signature", "key_encipherment", "server_auth"]
}
