#!/usr/bin/env python3
"""Where a request's CPU goes: buckets the samples of a `perf record -g` profile of the
server by the first frame of each stack that names a part (crypto by the leaf, since
aws-lc's assembly keeps no frame pointer).

    RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=/tmp/fp cargo build --release
    # run /tmp/fp/release/provisiond under load (provisiond bench --scenario sign-csr), then:
    perf record -F 999 -g -p <server pid> -o sign.data -- sleep 6
    scripts/perf-buckets.py sign.data

Or, without a second build, from the release build's debug info (fewer samples: perf
copies 16 KiB of stack with each):

    perf record -F 499 --call-graph dwarf,16384 -p <server pid> -o sign.data -- sleep 15
"""
import collections
import re
import subprocess
import sys
data = sys.argv[1]
out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
samples = out.split("\n\n")
CRYPTO = re.compile(r"nistz256|beeu_|bignum_|montinv|aws_lc_0_|sha256_block|ecp_|ECDSA|EVP_|bn_|p256|BN_|mul_mont|Lbignum")
RULES = [
    ("logging (tracing fmt, audit/request lines)", re.compile(r"tracing_subscriber|tracing_core::event|log_requests.*\bevent\b|DefaultVisitor|format::Full")),
    ("audit ring and the console's history feed (Audit::keep/send, history copier)", re.compile(r"Audit::|history::Copier|append_history")),
    ("JWT verify (HMAC, base64, claims)", re.compile(r"TokenService::verify|jsonwebtoken::decoding")),
    ("JWT and enrollment code made (HMAC, base64, claims)", re.compile(r"TokenService::issue|jsonwebtoken::encoding|CodeKey::encode")),
    ("CSR parse and checks (x509-parser, PEM)", re.compile(r"check_csr|x509_parser|der_parser|asn1_rs|parse_x509_pem")),
    ("certificate building (rcgen DER)", re.compile(r"CertificateAuthority::issue|rcgen|yasna")),
    ("store: Redis script and registry record", re.compile(r"TokenStore>::consume|try_consume|redis::|RedisStore|FallbackStore|TokenStore>::issue|try_issue")),
    ("response JSON", re.compile(r"hand_out|serde_json::ser|HttpResponseBuilder::json")),
    ("request JSON body", re.compile(r"JsonBody|serde_json::de|read_raw")),
    ("HTTP (actix h1 parse/encode, routing)", re.compile(r"actix_http|actix_web|h1::|httparse")),
    ("metrics, activity", re.compile(r"prometheus_client|metrics::|activity::")),
]
cats = collections.Counter()
total = 0
for s in samples:
    lines = [l.strip() for l in s.strip().splitlines() if l.strip()]
    if not lines:
        continue
    total += 1
    frames = [l.split(None, 1)[1] if " " in l else l for l in lines]
    leaf = frames[0]
    if CRYPTO.search(leaf):
        cats["crypto (aws-lc P-256, SHA-256)"] += 1
        continue
    kernel = "[unknown]" in leaf or leaf.startswith(("do_syscall", "entry_SYSCALL")) or re.match(r"^[a-z_0-9.]+$", leaf) and not "::" in leaf and not leaf.startswith(("_mi", "mi_", "__mem", "malloc", "free"))
    for name, rx in RULES:
        if any(rx.search(f) for f in frames):
            cats[name + (" [kernel part]" if kernel else "")] += 1
            break
    else:
        if re.search(r"_mi_|mi_|malloc|free", leaf):
            cats["allocation (elsewhere)"] += 1
        elif kernel:
            cats["kernel (other: scheduling, TCP not attributed)"] += 1
        else:
            cats["other: " + leaf[:50]] += 1
print(f"{total} samples")
others = 0
for name, n in cats.most_common():
    if name.startswith("other: ") and n / total < 0.004:
        others += n
        continue
    print(f"{100*n/total:5.1f}%  {name}")
print(f"{100*others/total:5.1f}%  other (each < 0.4%)")
