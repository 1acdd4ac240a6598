# --- The operator ---------------------------------------------------------------
# Nomad's HTTP API asks every caller for a certificate of the agents' CA
# (verify_https_client). The operator's is client-only: it opens the API,
# it can serve nothing. With it, the operator uses a token made once from
# the slm-operator policy (output operator_token_command) rather than the
# management token, which stays for break-glass.

resource "tls_private_key" "operator" {
  algorithm   = "ECDSA"
  ecdsa_curve = "P256"
}

resource "tls_cert_request" "operator" {
  private_key_pem = tls_private_key.operator.private_key_pem

  subject {
    common_name  = "operator"
    organization = "slm-mesh"
  }
}

resource "tls_locally_signed_cert" "operator" {
  cert_request_pem   = tls_cert_request.operator.cert_request_pem
  ca_private_key_pem = tls_private_key.agent_ca.private_key_pem
  ca_cert_pem        = tls_self_signed_cert.agent_ca.cert_pem

  # A year, renewed by an apply in its last month (write the files again
  # with the nomad_env output).
  validity_period_hours = 365 * 24
  early_renewal_hours   = 30 * 24
  allowed_uses          = ["digital_signature", "client_auth"]
}
