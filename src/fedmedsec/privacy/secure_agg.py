"""Secure aggregation: the server learns the sum of the round's updates and nothing else.

What this is. The masking core of SecAgg (Bonawitz et al., "Practical Secure Aggregation
for Privacy-Preserving Machine Learning", CCS 2017), for an honest-but-curious server:

1. Encoding. Each float update is clipped to [-clip, clip] and rounded to the fixed-point
   integer round(x * 2^scale_bits), held as uint64; arithmetic is in the ring Z_{2^64}.
   The sum of n encodings is exact (integer) while n * clip * 2^scale_bits < 2^63, so
   decoding the masked sum gives sum_u round(x_u 2^f) / 2^f: within n * 2^-(f+1) of the
   float sum per coordinate (defaults f = 32, clip = 2^16: error <= n * 1.2e-10, up to
   32767 clients).
2. Pairwise masks. Every pair (u, v) agrees on a seed by X25519 Diffie-Hellman on public
   keys relayed by the server, HKDF-SHA256 with the round id and the ordered pair in
   ``info``; ChaCha20 expands it into a uint64 vector p_uv. Client u sends
       y_u = enc(x_u) + PRG(b_u) + sum_{v > u} p_uv - sum_{v < u} p_uv   (mod 2^64);
   the pairwise terms cancel in sum_u y_u. Each y_u alone is uniform on Z_{2^64}^d to
   anyone without the seeds (a one-time pad with a PRG key), whatever x_u is.
3. Self masks and dropout recovery (optional, Bonawitz et al.'s double masking). Each client
   Shamir-shares (threshold t, over GF(2^521 - 1)) its X25519 private key and a fresh
   self-mask seed b_u with the others. After the masked inputs arrive, for every survivor
   the server collects t shares of b_u (to remove PRG(b_u)), and for every client that
   dropped after key agreement t shares of its private key (to recompute and remove the
   pairwise masks it left dangling in the survivors' vectors). An honest client never
   reveals both shares for the same peer; the self mask keeps a late-arriving vector
   private even after its owner's private key was reconstructed. Without recovery
   information a missing client leaves its masks in the sum, which then decodes to noise.

What this is NOT, relative to SecAgg+ (Bell et al., "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020) and Flower's SecAgg+ (``secaggplus_mod`` /
``SecAggPlusWorkflow``, legacy API only, see REFERENCES.md):
- complete graph: each client masks with all n - 1 others (O(n d) PRG work, O(n^2) key
  agreements); SecAgg+ uses a random O(log n)-degree graph;
- no authenticated or encrypted client-to-client channel: shares are returned to the
  caller, who must deliver them confidentially (SecAgg encrypts them with a second DH key
  pair, and authenticates keys with signatures against an active server);
- no consistency check round and no protection against a malicious server that lies about
  who dropped (it could ask for both kinds of shares of a client by reporting it dropped to
  some and alive to others); the threat model is honest-but-curious;
- deterministic rounding, no stochastic quantisation or modulus reduction as in Flower's
  (clipping_range, quantization_range, modulus_range);
- it is a set of pure functions for simulation and tests; the round loop decides what the
  server sees (:func:`server_view`). Sum-only visibility rules out aggregators that need
  individual updates (Krum, median, trimmed mean, FLTrust, ...).

Randomness: every function that draws takes ``rng``: a ``numpy.random.Generator`` makes the
keys, seeds and shares reproducible (simulation only, NOT secure); ``rng=None`` uses the OS
CSPRNG (``secrets`` / ``X25519PrivateKey.generate``), which a deployment must use. Keys
should be fresh per round: the round id separates the masks of reused keys, but a private
key reconstructed for a dropout exposes every round that used it.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SHAMIR_PRIME",
    "FixedPoint",
    "KeyPair",
    "generate_keypair",
    "mask",
    "pairwise_mask",
    "pairwise_seed",
    "secure_sum",
    "self_mask",
    "server_view",
    "shamir_combine",
    "shamir_split",
    "unmask_sum",
]

SHAMIR_PRIME = 2**521 - 1  # Mersenne prime > 2^256: a 32-byte secret is one field element
_DOMAIN = b"fedmedsec/secagg/v1"


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding in Z_{2^64}: x -> round(clip(x, -clip, clip) * 2^scale_bits)."""

    scale_bits: int = 32
    clip: float = 65536.0

    def __post_init__(self) -> None:
        if not (isinstance(self.scale_bits, int) and 0 <= self.scale_bits <= 62):
            raise ValueError(f"privacy.secure_aggregation.scale_bits = {self.scale_bits!r}: must be an int in [0, 62]")
        if not (self.clip > 0 and self.clip * 2.0**self.scale_bits < 2.0**62):
            raise ValueError(f"privacy.secure_aggregation.clip = {self.clip!r}: must be > 0 with clip * 2^scale_bits < 2^62")

    @property
    def max_clients(self) -> int:
        """Largest n whose summed encodings cannot overflow the signed range of Z_{2^64}."""
        return int((2**63 - 1) // int(np.ceil(self.clip * 2.0**self.scale_bits)))

    def encode(self, update) -> np.ndarray:
        """float Tensor[d] / array -> uint64 [d] (two's complement of the rounded integer)."""
        x = np.asarray(update.detach().cpu() if hasattr(update, "detach") else update, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"secure aggregation: expects an update Tensor[d], got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("secure aggregation: the update has non-finite values")
        q = np.rint(np.clip(x, -self.clip, self.clip) * 2.0**self.scale_bits).astype(np.int64)
        return q.view(np.uint64)

    def decode(self, total: np.ndarray) -> torch.Tensor:
        """uint64 [d] ring element -> float64 Tensor[d] (signed integer / 2^scale_bits)."""
        return torch.from_numpy(np.asarray(total, dtype=np.uint64).view(np.int64).astype(np.float64)
                                / 2.0**self.scale_bits)


@dataclass(frozen=True)
class KeyPair:
    """A client's X25519 key pair for mask agreement (raw 32-byte encodings)."""

    client_id: int
    private: bytes
    public: bytes


def _rand_bytes(n: int, rng: np.random.Generator | None) -> bytes:
    return secrets.token_bytes(n) if rng is None else rng.bytes(n)


def generate_keypair(client_id: int, rng: np.random.Generator | None = None) -> KeyPair:
    """X25519 key pair; from ``rng`` if given (reproducible, insecure), else the OS CSPRNG."""
    if not (isinstance(client_id, (int, np.integer)) and client_id >= 0):
        raise ValueError(f"secure aggregation: client id {client_id!r} must be an int >= 0")
    sk = X25519PrivateKey.generate() if rng is None else X25519PrivateKey.from_private_bytes(rng.bytes(32))
    return KeyPair(int(client_id), sk.private_bytes_raw(), sk.public_key().public_bytes_raw())


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_DOMAIN + info).derive(secret)


def _prg(seed: bytes, d: int) -> np.ndarray:
    """ChaCha20 keystream of 8 d bytes as uint64 [d]. A zero nonce is safe: every seed is a
    fresh HKDF output used for one vector only."""
    enc = Cipher(algorithms.ChaCha20(seed, b"\x00" * 16), mode=None).encryptor()
    return np.frombuffer(enc.update(b"\x00" * (8 * d)), dtype="<u8").astype(np.uint64)


def pairwise_seed(private: bytes, own_id: int, peer_id: int, peer_public: bytes, round_id: int) -> bytes:
    """32-byte seed shared by clients own_id and peer_id for ``round_id``:
    HKDF-SHA256(X25519(private, peer_public), info = domain | "pair" | round | min id | max id)."""
    if own_id == peer_id:
        raise ValueError(f"secure aggregation: client {own_id} listed as its own peer")
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = sorted((int(own_id), int(peer_id)))
    return _hkdf(shared, b"pair" + struct.pack(">QQQ", int(round_id), lo, hi))


def pairwise_mask(own: KeyPair, peers: Mapping[int, bytes], round_id: int, d: int) -> np.ndarray:
    """sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv) mod 2^64, uint64 [d]; ``peers`` maps
    every other client id of the round to its public key."""
    out = np.zeros(d, dtype=np.uint64)
    for v, pub in sorted(peers.items()):
        p = _prg(pairwise_seed(own.private, own.client_id, v, pub, round_id), d)
        out = out + p if v > own.client_id else out - p  # uint64 wraps mod 2^64
    return out


def self_mask(seed: bytes, round_id: int, d: int) -> np.ndarray:
    """PRG(HKDF(b_u, "self" | round)), uint64 [d]."""
    return _prg(_hkdf(seed, b"self" + struct.pack(">Q", int(round_id))), d)


def mask(update, own: KeyPair, peers: Mapping[int, bytes], round_id: int,
         fixed_point: FixedPoint = FixedPoint(), self_seed: bytes | None = None) -> np.ndarray:
    """The vector client ``own.client_id`` sends: enc(update) + [self mask] + pairwise mask,
    uint64 [d]. The input is not modified."""
    if own.client_id in peers:
        raise ValueError(f"secure aggregation: client {own.client_id} listed as its own peer")
    if len(peers) + 1 > fixed_point.max_clients:
        raise ValueError(f"secure aggregation: {len(peers) + 1} clients exceed the fixed-point "
                         f"capacity {fixed_point.max_clients}; lower clip or scale_bits")
    y = fixed_point.encode(update)
    d = y.shape[0]
    y = y + pairwise_mask(own, peers, round_id, d)
    if self_seed is not None:
        y = y + self_mask(self_seed, round_id, d)
    return y


def unmask_sum(
    masked: Mapping[int, np.ndarray] | Sequence[np.ndarray],
    fixed_point: FixedPoint = FixedPoint(),
    *,
    round_id: int | None = None,
    self_seeds: Mapping[int, bytes] | None = None,
    dropped_private: Mapping[int, bytes] | None = None,
    public_keys: Mapping[int, bytes] | None = None,
) -> torch.Tensor:
    """Sum of the survivors' updates, float64 Tensor[d], from their masked vectors.

    Without recovery arguments: sum mod 2^64 and decode, correct only if every client that
    the masks were agreed with sent its vector and no self masks were used. With recovery
    (``masked`` a mapping id -> vector, and ``round_id``): ``self_seeds`` maps each survivor
    to its reconstructed self-mask seed, ``dropped_private`` maps each dropped client to its
    reconstructed private key and ``public_keys`` holds every survivor's public key; the
    dangling pairwise masks are recomputed and removed."""
    items = list(masked.items()) if isinstance(masked, Mapping) else list(enumerate(masked))
    if not items:
        raise ValueError("secure aggregation: no masked vectors to sum")
    d = np.asarray(items[0][1]).shape[0]
    total = np.zeros(d, dtype=np.uint64)
    for _, y in items:
        y = np.asarray(y, dtype=np.uint64)
        if y.shape != (d,):
            raise ValueError(f"secure aggregation: masked vectors of lengths {d} and {y.shape}")
        total = total + y
    recovering = self_seeds or dropped_private
    if recovering and (round_id is None or not isinstance(masked, Mapping)):
        raise ValueError("secure aggregation: recovery needs masked as {client id: vector} and round_id")
    survivors = [u for u, _ in items]
    for seed in (self_seeds or {}).values():
        total = total - self_mask(seed, round_id, d)
    for v, priv in (dropped_private or {}).items():
        if v in dict(items):
            raise ValueError(f"secure aggregation: client {v} is both dropped and present")
        for u in survivors:
            if public_keys is None or u not in public_keys:
                raise ValueError(f"secure aggregation: public key of survivor {u} missing")
            p = _prg(pairwise_seed(priv, v, u, public_keys[u], round_id), d)
            # survivor u added +p if v > u, else -p: take it back out
            total = total - p if v > u else total + p
    return fixed_point.decode(total)


def shamir_split(secret: bytes, holders: Sequence[int], threshold: int,
                 rng: np.random.Generator | None = None) -> dict[int, int]:
    """Shamir's (t, n) sharing of a <= 64-byte secret over GF(2^521 - 1): holder h gets
    f(h + 1) for a random polynomial f of degree t - 1 with f(0) = secret."""
    holders = [int(h) for h in holders]
    if len(set(holders)) != len(holders) or any(h < 0 for h in holders):
        raise ValueError("secure aggregation: share holders must be distinct ids >= 0")
    if not (isinstance(threshold, int) and 1 <= threshold <= len(holders)):
        raise ValueError(f"secure aggregation: threshold {threshold!r} must be in [1, {len(holders)}]")
    s = int.from_bytes(secret, "big")
    if len(secret) > 64:
        raise ValueError("secure aggregation: secrets longer than 64 bytes are not supported")
    # 80 random bytes mod p: bias < 2^-118 (the reproducible path is for simulation anyway)
    coeffs = [s] + [int.from_bytes(_rand_bytes(80, rng), "big") % SHAMIR_PRIME
                    for _ in range(threshold - 1)]
    out = {}
    for h in holders:
        x, acc = h + 1, 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % SHAMIR_PRIME
        out[h] = acc
    return out


def shamir_combine(shares: Mapping[int, int], length: int = 32) -> bytes:
    """Lagrange interpolation at 0 of {holder: share}: the secret as ``length`` bytes. Any t
    shares of a threshold-t sharing give the secret; fewer give an unrelated value."""
    pts = [(int(h) + 1, int(y)) for h, y in shares.items()]
    if not pts:
        raise ValueError("secure aggregation: no shares to combine")
    s = 0
    for j, (xj, yj) in enumerate(pts):
        num, den = 1, 1
        for m, (xm, _) in enumerate(pts):
            if m != j:
                num = num * xm % SHAMIR_PRIME
                den = den * (xm - xj) % SHAMIR_PRIME
        s = (s + yj * num * pow(den, -1, SHAMIR_PRIME)) % SHAMIR_PRIME
    if s >= 256**length:
        return (s % 256**length).to_bytes(length, "big")  # wrong shares: an unrelated value
    return s.to_bytes(length, "big")


def secure_sum(updates: torch.Tensor, round_id: int, *, rng: np.random.Generator | None,
               dropped: Sequence[int] = (), threshold: int | None = None,
               fixed_point: FixedPoint = FixedPoint()) -> torch.Tensor:
    """The whole protocol in one process, for simulation and tests: clients 0..n-1 with
    updates [n, d] agree on keys, share private keys and self-mask seeds (threshold t,
    default n // 2 + 1), the clients in ``dropped`` never send their masked vector, the
    survivors reveal the shares the server needs, and the server decodes. Returns the
    float64 Tensor[d] sum of the survivors' (fixed-point) updates. Raises ValueError if
    fewer than t clients survive (the sum is then unrecoverable)."""
    n = int(updates.shape[0])
    t = n // 2 + 1 if threshold is None else threshold
    ids = list(range(n))
    keys = {u: generate_keypair(u, rng) for u in ids}
    pubs = {u: k.public for u, k in keys.items()}
    seeds = {u: _rand_bytes(32, rng) for u in ids}
    # share round: holder v receives share_sk[u][v] and share_b[u][v] from every u
    share_sk = {u: shamir_split(keys[u].private, ids, t, rng) for u in ids}
    share_b = {u: shamir_split(seeds[u], ids, t, rng) for u in ids}
    survivors = [u for u in ids if u not in set(dropped)]
    if len(survivors) < t:
        raise ValueError(f"secure aggregation: {len(survivors)} survivors < threshold {t}; "
                         "the sum cannot be recovered")
    masked = {u: mask(updates[u], keys[u], {v: pubs[v] for v in ids if v != u}, round_id,
                      fixed_point, self_seed=seeds[u]) for u in survivors}
    helpers = survivors[:t]  # any t survivors answer the unmasking request
    b_rec = {u: shamir_combine({h: share_b[u][h] for h in helpers}) for u in survivors}
    sk_rec = {v: shamir_combine({h: share_sk[v][h] for h in helpers}) for v in dropped}
    return unmask_sum(masked, fixed_point, round_id=round_id, self_seeds=b_rec,
                      dropped_private=sk_rec, public_keys={u: pubs[u] for u in survivors})


def server_view(updates: torch.Tensor, secure_aggregation: bool) -> torch.Tensor:
    """What the server can see of the round's updates [n, d]: all rows, or with secure
    aggregation only their sum, Tensor[1, d] (the input is not modified)."""
    if updates.ndim != 2:
        raise ValueError(f"server_view: expects Tensor[n, d], got shape {tuple(updates.shape)}")
    return updates.sum(0, keepdim=True) if secure_aggregation else updates.clone()
