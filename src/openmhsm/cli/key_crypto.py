"""`mhsm key sign|verify|encrypt|decrypt|wrap|unwrap`: cryptographic operations, all done by
the pool.

Every operation is sent to the pool's REST endpoint through `Clients.key_operation`, never run by
the SDK's local CryptographyClient providers: for oct keys those use a random local key (API §1.4),
and for RSA/EC keys the pool is the authority anyway. Values on the command line and in the
output are base64url; an encrypt result's fields feed decrypt's flags of the same names. A
base64url value may start with "-": pass it as `--value=<b64url>` so it is not read as a flag.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from typing import Any

from openmhsm.cli.output import b64url, b64url_arg, emit, reports_errors
from openmhsm.cli.pool_location import pool_of
from openmhsm.client import Clients, connect

_B64_NOTE = "Pass base64url values as --flag=VALUE: a value may start with '-'."
_HASHED_SIGNATURE = re.compile(r"(?:RS|PS|ES)(256|384|512)K?")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], named: argparse.ArgumentParser
) -> None:
    """Add the crypto commands to `mhsm key`; `named` gives the pool, --output and --name."""
    keyed = argparse.ArgumentParser(add_help=False, parents=[named])
    keyed.add_argument("--version", "-v", help="a version id (default: the latest)")
    keyed.add_argument(
        "--alg",
        "--algorithm",  # az's name
        "-a",
        dest="alg",
        required=True,
        help="JWA algorithm, e.g. RS256, RSA-OAEP-256",
    )

    sign = sub.add_parser(
        "sign", parents=[keyed], epilog=_B64_NOTE, help="sign a digest (or data, hashed here)"
    )
    _digest_flags(sign)
    sign.set_defaults(run=reports_errors(run_sign))

    verify = sub.add_parser(
        "verify",
        parents=[keyed],
        epilog=_B64_NOTE,
        help="verify a signature; exits 1 if it is not valid",
    )
    _digest_flags(verify)
    verify.add_argument("--signature", required=True, type=b64url_arg, metavar="B64URL")
    verify.set_defaults(run=reports_errors(run_verify))

    encrypt = sub.add_parser("encrypt", parents=[keyed], epilog=_B64_NOTE, help="encrypt one value")
    encrypt.add_argument(
        "--value", required=True, type=b64url_arg, metavar="B64URL", help="the plaintext"
    )
    encrypt.add_argument("--iv", type=b64url_arg, metavar="B64URL", help="CBC only")
    encrypt.add_argument(
        "--aad", type=b64url_arg, metavar="B64URL", help="additional authenticated data (GCM)"
    )
    encrypt.set_defaults(run=reports_errors(run_encrypt))

    decrypt = sub.add_parser("decrypt", parents=[keyed], epilog=_B64_NOTE, help="decrypt one value")
    decrypt.add_argument(
        "--value", required=True, type=b64url_arg, metavar="B64URL", help="the ciphertext"
    )
    decrypt.add_argument("--iv", type=b64url_arg, metavar="B64URL", help="CBC and GCM")
    decrypt.add_argument("--aad", type=b64url_arg, metavar="B64URL", help="GCM")
    decrypt.add_argument("--tag", type=b64url_arg, metavar="B64URL", help="GCM")
    decrypt.set_defaults(run=reports_errors(run_decrypt))

    wrap = sub.add_parser("wrap", parents=[keyed], epilog=_B64_NOTE, help="wrap (encrypt) a key")
    wrap.add_argument(
        "--value", required=True, type=b64url_arg, metavar="B64URL", help="the key to wrap"
    )
    wrap.set_defaults(run=reports_errors(run_wrap))

    unwrap = sub.add_parser(
        "unwrap", parents=[keyed], epilog=_B64_NOTE, help="unwrap (decrypt) a wrapped key"
    )
    unwrap.add_argument(
        "--value", required=True, type=b64url_arg, metavar="B64URL", help="the wrapped key"
    )
    unwrap.set_defaults(run=reports_errors(run_unwrap))


def _digest_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--digest",
        type=b64url_arg,
        metavar="B64URL",
        help="the digest to sign (for HS*: the value to MAC)",
    )
    group.add_argument(
        "--data",
        metavar="TEXT",
        help="UTF-8 text, hashed here with the algorithm's hash (HS*: sent as is)",
    )


def digest_of(alg: str, data: bytes) -> bytes:
    """What to send as the digest for `data`: its SHA-2 hash named by the algorithm (RS*, PS*,
    ES*), or the data itself for HMAC (HS*), which the pool MACs whole.

    Raises ValueError for an algorithm whose hash this cannot tell (RSNULL, unknown names).
    """
    name = alg.upper()
    if name.startswith("HS"):
        return data
    match = _HASHED_SIGNATURE.fullmatch(name)
    if match is None:
        raise ValueError(
            f"cannot tell which hash {alg} uses; hash the data yourself and pass --digest"
        )
    return hashlib.new(f"sha{match[1]}", data).digest()


def _digest(args: argparse.Namespace) -> bytes:
    if args.digest is not None:
        digest: bytes = args.digest
        return digest
    return digest_of(args.alg, args.data.encode())


def _key_id(clients: Clients, args: argparse.Namespace) -> str:
    kid = f"{clients.url}/keys/{args.name}"
    return f"{kid}/{args.version}" if args.version else kid


def _wire(**fields: bytes | str | None) -> dict[str, str]:
    """The request body: bytes as base64url, None left out."""
    return {k: b64url(v) if isinstance(v, bytes) else v for k, v in fields.items() if v is not None}


def _cipher_result(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    out = {"kid": result.get("kid"), "alg": args.alg, "value": result["value"]}
    out.update({k: result[k] for k in ("iv", "tag", "aad") if result.get(k)})
    return out


def run_sign(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        body = _wire(alg=args.alg, value=_digest(args))
        result = clients.key_operation(_key_id(clients, args), "sign", body)
    emit({"kid": result.get("kid"), "alg": args.alg, "signature": result["value"]}, args.output)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        kid = _key_id(clients, args)
        body = _wire(alg=args.alg, digest=_digest(args), value=args.signature)
        valid = bool(clients.key_operation(kid, "verify", body)["value"])
    emit({"kid": kid, "alg": args.alg, "valid": valid}, args.output)
    if not valid:
        print("the signature is not valid", file=sys.stderr)
        return 1
    return 0


def run_encrypt(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        body = _wire(alg=args.alg, value=args.value, iv=args.iv, aad=args.aad)
        result = clients.key_operation(_key_id(clients, args), "encrypt", body)
    emit(_cipher_result(args, result), args.output)
    return 0


def run_decrypt(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        body = _wire(alg=args.alg, value=args.value, iv=args.iv, aad=args.aad, tag=args.tag)
        result = clients.key_operation(_key_id(clients, args), "decrypt", body)
    emit({"kid": result.get("kid"), "alg": args.alg, "value": result["value"]}, args.output)
    return 0


def run_wrap(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        body = _wire(alg=args.alg, value=args.value)
        result = clients.key_operation(_key_id(clients, args), "wrapkey", body)
    emit({"kid": result.get("kid"), "alg": args.alg, "value": result["value"]}, args.output)
    return 0


def run_unwrap(args: argparse.Namespace) -> int:
    with connect(pool_of(args)) as clients:
        body = _wire(alg=args.alg, value=args.value)
        result = clients.key_operation(_key_id(clients, args), "unwrapkey", body)
    emit({"kid": result.get("kid"), "alg": args.alg, "value": result["value"]}, args.output)
    return 0
