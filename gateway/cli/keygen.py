"""``iii-gateway keygen FILE``: make a link identity (Ed25519 private key) and print its public key.

The private key is written to ``FILE`` as PKCS#8 PEM with mode 0600 from the moment it exists
(the gateway refuses to load a key others can read); an existing file is never replaced unless
``--force`` is given, since overwriting a key silently cuts a gateway off from every peer that
pinned it. The public key is the only thing printed on stdout (``ed25519:<base64url>``), so
``KEY=$(iii-gateway keygen edge.key)`` captures exactly what goes into the upstream's
authorized-peers file or a Bridge's ``public_key``. ``--public`` prints the public key of an
existing private key file instead.
"""

from __future__ import annotations

import argparse

from gateway.link.auth import format_public_key, generate_private_key, load_private_key, save_private_key

HELP = "create a link identity key file and print its public key"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="where to write the private key (mode 0600)")
    parser.add_argument("--force", action="store_true", help="replace FILE if it exists")
    parser.add_argument(
        "--public", action="store_true", help="do not create anything: print the public key of FILE"
    )


def run(args: argparse.Namespace) -> int:
    if args.public:
        print(format_public_key(load_private_key(args.file)))
        return 0
    key = generate_private_key()
    save_private_key(key, args.file, overwrite=args.force)
    print(format_public_key(key))
    return 0
