"""The encrypted, authenticated WAN link between vehicle and cloud.

- `certs`: a private CA and per-host certificates and keys (`cloudseg certs`).
- `tls_gate`: the mutual-TLS gate in front of the cloud's Fast DDS TCP port, and its vehicle-side
  counterpart (`python -m cloudseg.security.tls_gate`).
- `tls_context`, `refusals`: the gates' TLS contexts and peer names, and why and how they
  log a refused peer.

Why a gate: the Fast DDS in the pip wheels encrypts TCP with TLS, but its listening side never
asks connecting peers for a certificate (../shared/PLATFORM.md, "Security"), so anyone who can
reach the port receives everything. The gate verifies client certificates before one byte
reaches Fast DDS, which then listens on the loopback interface only.
"""
