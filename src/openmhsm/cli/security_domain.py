"""`mhsm security-domain ...`: a pool's security domain from the client side (API §4, issue 4).

Flags follow `az keyvault security-domain`. `download` activates a new pool (`mhsm up
--no-activate`); `init-recovery`, `restore-blob` and `upload` recover a pool started with `mhsm up
--recovery`; `wait` polls either operation; `make-wrapping-keys` makes key pairs for people without
a PKI. Certificates may be PEM or DER. Files this writes are never overwritten.

Wrapping private keys (`--sd-wrapping-keys` of `restore-blob` and `upload`) are PEM or DER, RSA,
optionally encrypted: `--passwords` gives their passwords in the same order ("" for a key without
one). A share is matched by its certificate's SHA-256 thumbprint, which a private key alone cannot
give, so each key needs its certificate: the `--sd-wrapping-certs` whose public key matches, else
a sibling file with the key's stem and `.cer`, `.crt` or `.pem` (as `az` expects `k1.cer` beside
`k1.pem`), else a certificate inside the key file itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from openmhsm.cli.activation import make_wrapping_keys
from openmhsm.cli.key_files import load_certificate, wrapping_key_pairs
from openmhsm.cli.output import Command, add_output_option, emit, reports_errors
from openmhsm.cli.pool_location import add_pool_location, pool_of
from openmhsm.cli.progress import OFF, Progress, add_progress_options, progress_mode
from openmhsm.client import connect
from openmhsm.domain import blob
from openmhsm.errors import MhsmError

if TYPE_CHECKING:
    from azure.keyvault.securitydomain import SecurityDomainClient

TARGETS = ("download", "upload")
_SUCCESS, _FAILED = frozenset({"success", "succeeded"}), frozenset({"failed", "canceled"})


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "security-domain", help="download, recover and upload a pool's security domain"
    )
    sub = parser.add_subparsers(dest="sd_command", required=True, metavar="COMMAND")
    output = argparse.ArgumentParser(add_help=False)
    add_output_option(output)
    pool = argparse.ArgumentParser(add_help=False, parents=[output])
    add_pool_location(pool)
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for Success (default 60)"
    )
    add_progress_options(timeout)
    waiting = argparse.ArgumentParser(add_help=False, parents=[timeout])
    waiting.add_argument("--no-wait", action="store_true", help="do not wait for activation")
    keys = argparse.ArgumentParser(add_help=False)
    keys.add_argument("--sd-file", type=Path, help="the security-domain file from `download`")
    keys.add_argument(
        "--sd-exchange-key", type=Path, help="the exchange-key certificate from `init-recovery`"
    )
    keys.add_argument(
        "--sd-wrapping-keys", nargs="+", type=Path, default=[], metavar="KEY",
        help="quorum of wrapping private keys (PEM or DER)",
    )  # fmt: skip
    keys.add_argument(
        "--sd-wrapping-certs", nargs="+", type=Path, default=[], metavar="CERT",
        help="their certificates, when not beside the keys as <stem>.cer/.crt/.pem",
    )  # fmt: skip
    keys.add_argument(
        "--passwords", nargs="+", default=[], metavar="PASSWORD",
        help='passwords of the wrapping keys, in order ("" for none)',
    )  # fmt: skip

    download = sub.add_parser(
        "download", parents=[pool, waiting], help="activate a new pool: download its domain"
    )
    download.add_argument(
        "--sd-wrapping-keys", nargs="+", type=Path, required=True, metavar="CERT",
        help=f"{blob.MIN_CERTIFICATES} to {blob.MAX_CERTIFICATES} RSA certificates (PEM or DER)",
    )  # fmt: skip
    download.add_argument(
        "--sd-quorum", type=int, required=True, help="shares needed to recover (2 to N)"
    )
    download.add_argument("--security-domain-file", type=Path, required=True)
    download.set_defaults(run=_reports(run_download))

    init = sub.add_parser(
        "init-recovery", parents=[pool], help="save a recovering pool's exchange key (PEM)"
    )
    init.add_argument("--sd-exchange-key", type=Path, required=True)
    init.set_defaults(run=_reports(run_init_recovery))

    restore = sub.add_parser(
        "restore-blob", parents=[output, keys], help="make an upload blob locally"
    )
    restore.add_argument("--sd-file-restore-blob", type=Path, required=True)
    restore.set_defaults(run=_reports(run_restore_blob))

    upload = sub.add_parser(
        "upload", parents=[pool, waiting, keys], help="recover a pool: upload its domain"
    )
    upload.add_argument(
        "--restore-blob", nargs="?", const=True, metavar="BLOB",
        help="upload this restore blob (or, with no value, --sd-file as one, as az does)",
    )  # fmt: skip
    upload.set_defaults(run=_reports(run_upload))

    wait = sub.add_parser("wait", parents=[pool, timeout], help="wait for Success or Failed")
    wait.add_argument(
        "--target", "--target-operation", dest="target", choices=TARGETS, default="upload"
    )
    wait.set_defaults(run=_reports(run_wait))

    make = sub.add_parser(
        "make-wrapping-keys", parents=[output], help="make RSA key pairs (<prefix>N.key/.cer)"
    )
    make.add_argument("--count", type=int, default=3, help="how many (default 3)")
    make.add_argument("--out", type=Path, required=True, help="folder to write them to")
    make.add_argument("--prefix", default="w", help="file-name prefix (default w)")
    make.set_defaults(run=_reports(run_make_wrapping_keys))


def _reports(command: Command) -> Command:
    """reports_errors, plus the security-domain format's own errors as one line."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except MhsmError as e:
            print(e.message, file=sys.stderr)
            return 1

    return reports_errors(run)


def run_download(args: argparse.Namespace) -> int:
    from azure.keyvault.securitydomain.models import CertificateInfo

    paths: list[Path] = args.sd_wrapping_keys
    count, quorum = len(paths), args.sd_quorum
    if not blob.MIN_CERTIFICATES <= count <= blob.MAX_CERTIFICATES:
        raise ValueError(
            f"--sd-wrapping-keys needs {blob.MIN_CERTIFICATES} to {blob.MAX_CERTIFICATES} "
            f"certificates, not {count}"
        )
    if not blob.MIN_QUORUM <= quorum <= count:
        raise ValueError(f"--sd-quorum must be {blob.MIN_QUORUM} to {count}")
    jwks = [_download_jwk(path) for path in paths]
    prints = [str(jwk["x5t#S256"]) for jwk in jwks]
    if len(set(prints)) != count:
        raise ValueError("--sd-wrapping-keys names the same certificate twice")
    path = args.security_domain_file
    # Claim the file first: a downloaded domain cannot be fetched again (an admin must re-allow it).
    out, written = _create_new(path, 0o600), False
    try:
        with out, _client(pool_of(args)) as client:
            poller = client.begin_download(
                certificate_info=CertificateInfo({"certificates": jwks, "required": quorum}),
                skip_activation_polling=True,
            )
            value = poller.result().value
            if not isinstance(value, str):
                raise ValueError("the pool sent no security-domain file")
            out.write(value.encode("utf-8"))
            written = True
    finally:
        if not written:
            path.unlink(missing_ok=True)
    with _client(pool_of(args)) as client:
        status = _status(client, "download", args.timeout, args.no_wait, progress_mode(args))
    certificates = [{"file": str(p), "x5t#S256": t} for p, t in zip(paths, prints, strict=True)]
    summary = {"securityDomainFile": str(path), "quorum": quorum, "certificates": certificates}
    emit({**summary, **status}, args.output)
    return 0


def run_init_recovery(args: argparse.Namespace) -> int:
    with _client(pool_of(args)) as client:
        raw: object = client.get_transfer_key().transfer_key
    # The pool sends a JSON-encoded JWK string, as `az` expects (API §4.1); accept an object too.
    jwk = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(jwk, Mapping):
        raise ValueError("the pool's transfer key is not a JWK")
    certificate = blob.certificate_from_jwk(dict(jwk))
    _write_new(args.sd_exchange_key, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    emit(
        {
            "exchangeKey": str(args.sd_exchange_key),
            "subject": certificate.subject.rfc4514_string(),
            "x5t#S256": blob.thumbprint_s256(certificate),
        },
        args.output,
    )
    return 0


def run_restore_blob(args: argparse.Namespace) -> int:
    _refuse_existing(args.sd_file_restore_blob)
    text, exchange = _make_blob(args)
    _write_new(args.sd_file_restore_blob, text.encode("utf-8"), 0o600)
    emit(
        {"restoreBlob": str(args.sd_file_restore_blob), "x5t_256": blob.thumbprint_s256(exchange)},
        args.output,
    )
    return 0


def run_upload(args: argparse.Namespace) -> int:
    from azure.keyvault.securitydomain.models import SecurityDomain

    if args.restore_blob is not None:
        if args.sd_wrapping_keys or args.sd_wrapping_certs or args.passwords:
            raise ValueError("--restore-blob uploads a ready blob: give no wrapping keys")
        path = args.sd_file if args.restore_blob is True else Path(args.restore_blob)
        if path is None:
            raise ValueError("--restore-blob needs a file (or --sd-file)")
        text = path.read_text()
        if '"WrappedKey"' not in text:
            raise ValueError(
                f"{path} is not a restore blob: make one with `restore-blob`, or upload the "
                "security-domain file with --sd-exchange-key and --sd-wrapping-keys"
            )
    else:
        text, _ = _make_blob(args)
    with _client(pool_of(args)) as client:
        client.begin_upload(
            security_domain=SecurityDomain({"value": text}), skip_activation_polling=True
        ).result()
        status = _status(client, "upload", args.timeout, args.no_wait, progress_mode(args))
    emit(status, args.output)
    return 0


def run_wait(args: argparse.Namespace) -> int:
    with _client(pool_of(args)) as client:
        status = _status(client, args.target, args.timeout, False, progress_mode(args))
    emit(status, args.output)
    return 0


def run_make_wrapping_keys(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= blob.MAX_CERTIFICATES:
        raise ValueError(f"--count must be 1 to {blob.MAX_CERTIFICATES}")
    for n in range(args.count):
        for suffix in (".key", ".cer"):
            _refuse_existing(args.out / f"{args.prefix}{n}{suffix}")
    made = make_wrapping_keys(args.count, args.out, args.prefix)
    emit([{"certificate": str(c), "key": str(k)} for c, k in made], args.output)
    return 0


def _make_blob(args: argparse.Namespace) -> tuple[str, x509.Certificate]:
    """The restore blob made locally from --sd-file, --sd-exchange-key and the wrapping keys."""
    for name in ("sd_file", "sd_exchange_key", "sd_wrapping_keys"):
        if not getattr(args, name):
            raise ValueError(f"missing --{name.replace('_', '-')} (or give --restore-blob)")
    exchange = load_certificate(args.sd_exchange_key)
    pairs = wrapping_key_pairs(args.sd_wrapping_keys, args.sd_wrapping_certs, args.passwords)
    return blob.make_restore_blob(args.sd_file.read_text(), pairs, exchange), exchange


def _download_jwk(path: Path) -> dict[str, object]:
    try:
        return blob.certificate_jwk(load_certificate(path), kid=path.stem)
    except MhsmError as e:
        raise ValueError(f"{path}: {e.message}") from None


@contextlib.contextmanager
def _client(pool: str | Path) -> Iterator[SecurityDomainClient]:
    """The SecurityDomainClient of the pool at a data dir or URL (`pool_location.pool_of`)."""
    with connect(pool) as clients:
        yield clients.security_domain


def _status(
    client: SecurityDomainClient, target: str, timeout: float, no_wait: bool, mode: str = OFF
) -> dict[str, str]:
    """The operation's status; unless `no_wait`, polled until Success (else ValueError), with
    a spinner on stderr (`progress`) while it is pending."""
    get = client.get_download_status if target == "download" else client.get_upload_status
    deadline, delay = time.monotonic() + timeout, 0.25
    with Progress(f"security-domain {target}", OFF if no_wait else mode) as bar:
        while True:
            answer = get()
            status = str(getattr(answer.status, "value", answer.status) or "")
            result = {"status": status, "statusDetails": answer.status_details or ""}
            bar.update(status)
            if no_wait or status.lower() in _SUCCESS:
                return result
            if status.lower() in _FAILED:
                raise ValueError(f"security-domain {target} {status}: {result['statusDetails']}")
            if time.monotonic() + delay > deadline:
                raise ValueError(
                    f"security-domain {target} still {status or 'pending'} after {timeout:g} s: "
                    f"{result['statusDetails']}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _refuse_existing(path: Path) -> None:
    if path.exists() or path.is_symlink():
        raise ValueError(f"{path} already exists: move it away or choose another file")


def _create_new(path: Path, mode: int) -> BinaryIO:
    """A new file, never an existing one (ValueError)."""
    try:
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb")
    except FileExistsError:
        _refuse_existing(path)
        raise


def _write_new(path: Path, data: bytes, mode: int) -> None:
    with _create_new(path, mode) as f:
        f.write(data)
