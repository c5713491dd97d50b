"""Everything that touches keys and certificates.

- :mod:`gilmsg.crypto.signing`: signing envelopes and ACKs, and validating them;
- :mod:`gilmsg.crypto.trust`: the trust store (CA bundle, CRL, chain and revocation checks);
- :mod:`gilmsg.crypto.certs`: the certificate authority behind ``gilmsg-certs``;
- :mod:`gilmsg.crypto.fedmsg_compat`: gilmsg's signing installed as stock fedmsg's
  ``x509`` backend.

Importing this package loads nothing: ``cryptography`` comes with the first module used.
"""
