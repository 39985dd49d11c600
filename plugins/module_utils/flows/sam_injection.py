# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loading the catalogue's SAM keys into the PSAMs presented in one or more readers, in one batch.

Policy is enforced before any APDU is sent (粤交〔2019〕11号 第二条(四): 专用安全存取模块仅存储消费类密钥):

1. :func:`plan_keys` validates the whole catalogue (``catalogue.load_catalogue``) and refuses any requested key
   type that is not consumption-class with ``sam`` among its holders: a recharge key is never sent to a SAM;
2. per SAM, the registry refuses a serial that is unknown, not active, or assigned to another city, holder or
   station, right after the SAM's serial is read and before any key APDU.

Per SAM: read its serial and key slots; derive its master key in the HSM; open the loading channel (the SAM proves
it holds its master key before anything computed under a key is sent: a SAM that fails is refused, moved out and
not retried); WRITE KEY each missing key under secure messaging; then verify each key functionally (the SAM's MAC1
for test cards of three issuers equals the HSM's, and the SAM accepts the HSM's MAC2). Only verified keys are
recorded as loaded. A SAM whose right versions are already recorded is left untouched.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today as network_today
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import (
    BlacklistError,
    CardGone,
    CatalogueError,
    HsmError,
    PolicyError,
    SamError,
    SamInjectionInvariantError,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import CITY_CODE_RE, version_name
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows import blacklist
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import (
    KeyTypeEntry,
    assert_sam_allowed,
    issuer_factor,
    load_catalogue,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.sam_registry import Registry
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.channel import PcscContext, SamChannel
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.psam import (
    ALGORITHM_CODES,
    LEVELS_BY_MAC1_FORM,
    USAGES,
    SamIdentity,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.sam_crypto import SamAuthenticationError, SamCrypto
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from ansible_collections.tunion.keymgmt.plugins.module_utils.registry_store.sqlite import Observed

#: the purchase the functional verification asks each SAM to MAC, for each test card (:func:`test_cards`)
DEFAULT_TEST_CARD: dict[str, str] = {
    "random": "1A2B3C4D",
    "counter": "0001",
    "amount": "00000001",
    "type": "06",
    "datetime": "20250101120000",
    "data": "5455554E494F4E2D5341",  # 80 FA test data for non-purchase key usages
}


#: the issuers of the test cards besides the SAM's own city: another Guangdong city, and one outside Guangdong
#: (Beijing, 110000), whose cards a PSAM of the national interconnection must accept too (第二条(二))
OTHER_GUANGDONG_ISSUERS = ("440300", "440100")
OUTSIDE_GUANGDONG_ISSUER = "110000"


def test_cards(city_code: str, mac1_form: str) -> list[tuple[bytes, bytes]]:
    """(card application serial, issuer factor) of the test cards a SAM of ``city_code`` must MAC correctly.

    Two-level (the Ministry-level key): a card of the SAM's city, of another Guangdong city and of an issuer outside
    Guangdong. Single-level (a closed scheme): the city's own card only. Every serial starts ``FFFF``, which no
    issuer's card numbers do: a test card is outside any issuable range (a project choice, docs/key_hierarchy.md).
    """
    issuers = [city_code]
    if mac1_form == "two-level":
        issuers += [next(c for c in OTHER_GUANGDONG_ISSUERS if c != city_code), OUTSIDE_GUANGDONG_ISSUER]
    return [(bytes.fromhex(f"FFFF{code}000001"), issuer_factor(code)) for code in issuers]


@dataclass(frozen=True)
class KeyPlan:
    key_type: str
    version: int
    algorithm: str
    usage: int
    scope: str
    entry: KeyTypeEntry

    def label(self, city_code: str) -> str:
        """The key a PSAM of ``city_code`` receives: the level the catalogue's hierarchy gives a PSAM."""
        return self.entry.label(self.version, self.entry.psam_holder(city_code))

    @property
    def mac1_form(self) -> str:
        return self.entry.hierarchy.mac1_form or "single-level"

    @property
    def levels(self) -> int:
        """WRITE KEY P2: the diversifications from the loaded key down to a card key."""
        return LEVELS_BY_MAC1_FORM[self.mac1_form]

    def factors(self, card: bytes, issuer: bytes) -> bytes:
        """The factors the PSAM's commands carry for one card: card serial, then (two-level) the issuer factor."""
        return card + issuer if self.levels == 2 else card


def _requested_key(req: Any) -> tuple[str, int | None]:
    """One entry of the ``keys`` option: a key type name, or ``{key, version}``."""
    if isinstance(req, str):
        return req.strip(), None
    if not isinstance(req, Mapping):
        raise PolicyError(f"keys entry {req!r} is neither a key type name nor {{key, version}}; nothing was sent")
    extra = sorted(set(req) - {"key", "version"})
    if extra:
        raise PolicyError(
            f"keys entry {dict(req)!r}: unknown field(s) {', '.join(map(str, extra))}; give {{key, version}}"
        )
    if not isinstance(req.get("key"), str) or not req["key"].strip():
        raise PolicyError(
            f"keys entry {dict(req)!r}: give the key type name as key, e.g. {{key: purchase, version: 1}}"
        )
    version = req.get("version")
    if version is None:
        return req["key"].strip(), None
    try:
        if isinstance(version, bool):
            raise ValueError
        return req["key"].strip(), int(version)
    except (TypeError, ValueError):
        raise PolicyError(f"keys entry {req['key']}: version {version!r} is not a number") from None


def plan_keys(catalogue: Any, requested: list[Any] | None, today: _dt.date | None = None) -> list[KeyPlan]:
    """The keys to load, checked against the catalogue and the rules before any reader is touched."""
    try:
        cat = load_catalogue(catalogue)
    except CatalogueError as exc:
        raise PolicyError(str(exc)) from None
    today = today or network_today()
    wanted: list[tuple[KeyTypeEntry, int | None]] = []
    if requested:
        for req in requested:
            name, ver = _requested_key(req)
            try:
                entry = cat.entry(name)
            except KeyError:
                raise PolicyError(f"key type {name!r} is not in the key catalogue") from None
            try:
                assert_sam_allowed(entry)
            except CatalogueError as exc:
                if entry.key_class == "consumption":  # consumption, but the catalogue keeps it off SAMs
                    raise PolicyError(f"refusing to send key {name!r} to any SAM: {'; '.join(exc.errors)}") from None
                cn = {"recharge": "充值类", "internal": "内部"}.get(entry.key_class, entry.key_class)
                raise PolicyError(
                    f"refusing to send key {name!r} to any SAM: it is {entry.key_class}-class ({cn}), and "
                    f"专用安全存取模块仅存储消费类密钥 (粤交〔2019〕11号 第二条(四)): SAMs hold consumption keys only. "
                    "Nothing was sent to any SAM."
                ) from None
            wanted.append((entry, ver))
    else:
        wanted = [(e, None) for e in cat.for_sam()]
    if not wanted:
        raise PolicyError("the catalogue has no key type a SAM may hold (consumption class, 'sam' among holders)")
    plans = []
    for entry, asked in wanted:
        ver = _version(entry, asked, today)
        plans.append(KeyPlan(entry.name, ver, entry.algorithm, USAGES[entry.name], entry.scope, entry))
    return plans


def _version(entry: KeyTypeEntry, asked: int | None, today: _dt.date) -> int:
    if entry.name not in USAGES:
        raise PolicyError(f"key type {entry.name!r} has no key usage in the PSAM profile ({', '.join(USAGES)})")
    if entry.algorithm not in ALGORITHM_CODES:
        raise PolicyError(f"key type {entry.name!r} is {entry.algorithm}; the PSAM profile loads 3DES-2KEY keys")
    if asked is None:
        valid = [v.version for v in entry.versions if v.valid_on(today)]
        if not valid:
            raise PolicyError(f"key type {entry.name!r} has no version valid on {today.isoformat()}")
        return max(valid)
    kv = next((v for v in entry.versions if v.version == asked), None)
    if kv is None:
        raise PolicyError(f"key type {entry.name!r} has no version {asked} in the catalogue")
    if not kv.valid_on(today):
        raise PolicyError(f"{entry.name!r} version {asked} is not valid on {today.isoformat()}")
    return asked


@dataclass
class SamResult:
    serial: str
    reader: str
    status: str = "failed"  # loaded | unchanged | would_load | refused | failed (refused: never retried in the run)
    city_code: str = ""
    holder: str = ""
    keys_loaded: list[str] = field(default_factory=list)
    keys_verified: list[str] = field(default_factory=list)
    keys_to_load: list[str] = field(default_factory=list)
    error: str = ""
    apdus: int = 0
    seconds: float = 0.0
    done_at: float = 0.0  # seconds from the start of the batch
    attempts: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", [])} | {"serial": self.serial}

    @property
    def retried(self) -> bool:
        return self.attempts > 1


def _tag(plan: KeyPlan) -> str:
    return version_name(plan.key_type, plan.version)


class Injector:
    def __init__(
        self,
        *,
        plans: list[KeyPlan],
        registry: Registry,
        observed: Observed | None,
        crypto: Any,
        station: str,
        operator: str,
        city_code: str = "",
        holder: str = "",
        check_mode: bool = False,
        test_card: Mapping[str, str] | None = None,
        blacklisted: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.plans = plans
        self.registry = registry
        self.blacklisted = blacklisted or {}
        self.observed = observed
        self.crypto = crypto
        self.station = station
        self.operator = operator
        self.city_code = city_code
        self.holder = holder
        self.check_mode = check_mode
        card = dict(DEFAULT_TEST_CARD, **(test_card or {}))
        self.card = {k: bytes.fromhex(v) for k, v in card.items()}
        self.db_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ one SAM
    def process(self, ch: SamChannel, seen: set[str]) -> SamResult | None:
        """Handle the SAM in ``ch``; None if it was already handled in this run (the machine has not swapped)."""
        t0 = time.monotonic()
        ch.select()
        serial = ch.read_serial()
        if serial in seen:
            return None
        res = SamResult(serial, ch.reader)
        rows: list[dict[str, Any]] = []
        keys: Future[Any] | None = None
        try:
            refusal = blacklist_refusal(self.blacklisted.get(serial)) or self.registry.refusal(
                serial, station=self.station, city_code=self.city_code, holder=self.holder
            )
            if refusal:  # before anything but the serial was read: no key APDU, no HSM operation
                res.status, res.error = "refused", refusal
            else:
                recorded = self._recorded(serial)
                if not self.check_mode and any((p.key_type, p.version) not in recorded for p in self.plans):
                    keys = self._pool().submit(self._derive, serial)  # the HSM works while the SAM is read
                self._process(ch, ch.details(serial), res, recorded, keys, rows)
        except SamAuthenticationError as exc:  # a card that lies: moved out, never given a second attempt
            res.status, res.error = "refused", str(exc)
        except (CardGone, SamError, HsmError, SamInjectionInvariantError) as exc:
            res.status, res.error = "failed", str(exc)
        finally:
            if keys is not None:
                self._close_keys(keys)
        if res.status != "failed":
            seen.add(serial)  # a failed SAM presented again (reseated) gets another attempt
        res.apdus = ch.apdus
        res.seconds = round(time.monotonic() - t0, 4)
        self._store(rows, res)  # whatever was verified is recorded, even if a later key failed
        return res

    def _derive(self, serial: str) -> Any:
        a = self.registry.get(serial)
        labels = tuple(p.label(a.city_code) for p in self.plans) if a else ()
        return self.crypto.sam_keys(serial, labels)

    def _close_keys(self, keys: Future[Any]) -> None:
        try:
            sam_keys = keys.result()
        except HsmError:
            return
        with sam_keys.lock:
            sam_keys.close()

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="sam-hsm")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _process(  # noqa: PLR0917 - the pieces of one SAM's run
        self,
        ch: SamChannel,
        ident: SamIdentity,
        res: SamResult,
        recorded: dict[tuple[str, int], str],
        keys: Future[Any] | None,
        rows: list[dict[str, Any]],
    ) -> None:
        a = self.registry.get(ident.serial)
        if a is None:  # screened before this SAM was processed
            raise SamInjectionInvariantError(f"SAM {ident.serial} left the registry during its run")
        res.city_code, res.holder = a.city_code, a.holder
        load: list[tuple[KeyPlan, str]] = []
        verify: list[tuple[KeyPlan, str]] = []
        for plan in self.plans:
            label = plan.label(a.city_code)
            kcv = self.crypto.cached_kcv(label)
            if kcv is None:
                with self.crypto.lock:
                    kcv = self.crypto.kcv(label)
            slot = ident.slot(plan.usage, plan.version)
            if slot is None or slot.kcv != kcv:
                load.append((plan, label))
            elif recorded.get((plan.key_type, plan.version)) != kcv:
                verify.append((plan, label))  # in the SAM but never verified (e.g. removed after WRITE KEY)
        res.keys_to_load = [_tag(plan) for plan, _kcv in load + verify]
        if self.check_mode:
            res.status = "would_load" if load or verify else "unchanged"
            return
        if not load and not verify:
            res.status = "unchanged"
            return
        checks = [(plan, label, self._expect(ident, plan, label, a.city_code)) for plan, label in load + verify]
        if load:
            own = keys is None
            sam_keys = (keys or self._pool().submit(self._derive, ident.serial)).result()
            host = os.urandom(8)
            card, card_cryptogram = ch.initialize_update(host)
            with sam_keys.lock:  # the SAM proves it holds MK before anything made under a key is sent
                sam_keys.open_session(host, card, card_cryptogram)
                auth = sam_keys.external_authenticate()
            ch.external_authenticate(auth)
            for plan, label in load:
                with sam_keys.lock:
                    apdu = sam_keys.write_key_apdu(label, plan.usage, plan.version, plan.algorithm, plan.levels)
                ch.write_key(apdu, f"WRITE KEY {_tag(plan)}")
                res.keys_loaded.append(_tag(plan))
            if own:
                with sam_keys.lock:
                    sam_keys.close()
        for plan, label, expected in checks:
            self._verify(ch, ident, plan, label, expected, a.city_code)
            res.keys_verified.append(_tag(plan))
            rows.append(self._row(ident.serial, a, plan, label))
        res.status = "loaded"

    def _purchase_data(self, plan: KeyPlan, factors: bytes) -> bytes:
        c = self.card
        return (
            c["random"]
            + c["counter"]
            + c["amount"]
            + c["type"]
            + c["datetime"]
            + bytes([plan.version, ALGORITHM_CODES[plan.algorithm]])
            + factors
        )

    def _expected_mac1(
        self, label: str, factors: bytes, terminal: str, tsn: bytes, with_mac2: bool
    ) -> tuple[bytes, bytes]:
        c = self.card
        tail = c["amount"] + c["type"] + bytes.fromhex(terminal) + c["datetime"]
        with self.crypto.lock:
            return self.crypto.expected_mac1(label, factors, c["random"], c["counter"], tsn, tail, with_mac2)

    def _expect(
        self, ident: SamIdentity, plan: KeyPlan, label: str, city_code: str
    ) -> list[Future[tuple[bytes, bytes]]] | None:
        """Start the HSM's side of a key's verification before the SAM is asked: MAC1 depends on the SAM's terminal
        number and transaction serial (one more per 80 70), read with its key slots; the HSM works while the SAM
        loads keys."""
        if plan.key_type != "purchase":
            return None
        base = int.from_bytes(ident.tsn, "big")
        return [
            self._pool().submit(
                self._expected_mac1,
                label,
                plan.factors(card, issuer),
                ident.terminal,
                ((base + i) & 0xFFFFFFFF).to_bytes(4, "big"),
                i == 0,
            )
            for i, (card, issuer) in enumerate(test_cards(city_code, plan.mac1_form))
        ]

    def _verify(  # noqa: PLR0917 - the pieces of one key's verification
        self,
        ch: SamChannel,
        ident: SamIdentity,
        plan: KeyPlan,
        label: str,
        expected: list[Future[tuple[bytes, bytes]]] | None,
        city_code: str,
    ) -> None:
        c = self.card
        for i, (card, issuer) in enumerate(test_cards(city_code, plan.mac1_form)):
            factors = plan.factors(card, issuer)
            who = f"test card {card.hex().upper()} (issuer {issuer.hex().upper()})"
            if plan.key_type == "purchase":
                tsn, mac1 = ch.mac1(self._purchase_data(plan, factors))
                announced = ((int.from_bytes(ident.tsn, "big") + i) & 0xFFFFFFFF).to_bytes(4, "big")
                if expected is not None and tsn == announced:
                    want, mac2 = expected[i].result()
                else:  # the SAM used another transaction serial than it announced: compute for that one
                    want, mac2 = self._expected_mac1(label, factors, ident.terminal, tsn, i == 0)
                what = "MAC1"
            else:
                mac1 = ch.des_mac(plan.usage, plan.version, factors, c["data"])
                with self.crypto.lock:
                    want = self.crypto.expected_des_mac(label, factors, c["data"])
                mac2, what = b"", "80 FA MAC"
            if mac1 != want:
                raise SamError(
                    f"{_tag(plan)} not verified: the SAM's {what} for {who} differs from the HSM's "
                    "(the key in the SAM is not the catalogue key, or the SAM is faulty)"
                )
            # MAC2 for the SAM's own city's card (the interop check sends it for every card), and only after the
            # SAM's MAC1 proved it holds the key
            if mac2 and not ch.mac2(mac2):
                raise SamError(f"{_tag(plan)} not verified: the SAM refused the HSM's MAC2 for {who}")

    # ------------------------------------------------------------------ observed state
    def _recorded(self, serial: str) -> dict[tuple[str, int], str]:
        if self.observed is None:
            return {}
        with self.db_lock:
            return self.observed.loaded(serial)

    def _row(self, serial: str, a: Any, plan: KeyPlan, label: str) -> dict[str, Any]:
        return {
            "serial": serial,
            "key_type": plan.key_type,
            "version": plan.version,
            "algorithm": plan.algorithm,
            "kcv": self.crypto.kcv(label),
            "city_code": a.city_code,
            "holder": a.holder,
            "station": self.station,
            "operator": self.operator,
            "loaded_at": now(),
            "verified_by": ("MAC1+MAC2" if plan.key_type == "purchase" else "80FA-MAC")
            + f" ({len(test_cards(a.city_code, plan.mac1_form))} issuers)",
        }

    def _store(self, rows: list[dict[str, Any]], res: SamResult) -> None:
        """Verified keys and the run's outcome for one SAM, in one transaction (none in check mode)."""
        if self.observed is None or self.check_mode:
            return
        run = (res.serial, now(), self.station, self.operator, res.status, res.error)
        with self.db_lock:
            self.observed.record(rows, [run])


#: attempts per SAM and run before it is reported failed and moved out
MAX_ATTEMPTS = 3


def run_batch(  # noqa: PLR0915 - one reader loop, kept in one place
    injector: Injector,
    readers: list[str],
    *,
    max_sams: int = 0,
    idle_timeout: float = 3.0,
    advance: bool = True,
    trace: list[str] | None = None,
    trace_channel: bool = False,
    context: Callable[[], PcscContext] = PcscContext,
    reader_errors: list[str] | None = None,
    timing: dict[str, float] | None = None,
) -> list[SamResult]:
    """Process the SAMs presented in ``readers``, one thread per reader, until each reader has been empty (or held
    only SAMs already handled) for ``idle_timeout`` seconds, or ``max_sams`` SAMs were handled."""
    results: list[SamResult] = []
    stats: dict[str, float] = {"start": time.monotonic()}
    lock = threading.Lock()
    errors: list[str] = []
    if reader_errors is None:
        reader_errors = []

    def worker(reader: str) -> None:
        try:
            pc = context()
        except SamError as exc:
            errors.append(str(exc))
            return
        seen: set[str] = set()
        tries: dict[str, int] = {}
        last = time.monotonic()
        try:
            while True:
                with lock:
                    if max_sams and len(results) >= max_sams:
                        return
                ch = pc.connect(reader, trace, trace_channel)
                if ch is None:
                    left = idle_timeout - (time.monotonic() - last)
                    if left <= 0:
                        return
                    pc.wait_for_card(reader, min(left, 0.5))
                    continue
                try:
                    res = injector.process(ch, seen)
                except (CardGone, SamError) as exc:  # no serial yet: a reader problem, not a SAM result
                    with lock:
                        reader_errors.append(f"{reader}: reading the SAM's serial: {exc}")
                    pc.release(ch, advance=False)
                    time.sleep(0.01)
                    continue
                # a failed SAM stays in the reader for another attempt (a garbled exchange is transient); after
                # MAX_ATTEMPTS, or once it is done, the machine is told to move it out. A SAM already done in this
                # run that is still there (the machine missed the reset, e.g. the SAM was reseated) is told again.
                done = res is None or res.status != "failed" or tries.get(res.serial, 0) + 1 >= MAX_ATTEMPTS
                pc.release(ch, advance=advance and done)
                if res is not None and res.status == "failed":
                    tries[res.serial] = tries.get(res.serial, 0) + 1
                if res is None:
                    if time.monotonic() - last > idle_timeout:
                        return
                    time.sleep(0.005)
                    continue
                last = time.monotonic()
                res.done_at = round(last - stats["start"], 4)
                with lock:
                    results.append(res)
                    stats["last_done"] = last
                if not advance:
                    return
        finally:
            pc.close()

    threads = [threading.Thread(target=worker, args=(r,), name=f"sam-{r}") for r in readers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        injector.close()
    if errors and not results:
        raise SamError("; ".join(sorted(set(errors))))
    if timing is not None:  # the batch's working time: first SAM in to last SAM done (not the final idle wait)
        timing["seconds"] = stats.get("last_done", stats["start"]) - stats["start"]
    return _last_attempts(results)


def _last_attempts(results: list[SamResult]) -> list[SamResult]:
    """A SAM attempted twice in a run (failed, then reseated) is reported by its last attempt."""
    final: dict[str, SamResult] = {}
    for r in results:
        prev = final.get(r.serial)
        if prev is not None and r.serial != "unknown":
            r.attempts = prev.attempts + 1
            r.keys_loaded = sorted(set(prev.keys_loaded) | set(r.keys_loaded))
        final[r.serial if r.serial != "unknown" else f"unknown-{id(r)}"] = r
    return list(final.values())


def blacklist_refusal(entry: Mapping[str, str] | None) -> str | None:
    """Why a SAM on the province's blacklist gets no keys (粤交〔2019〕11号 第十七条), or None."""
    if entry is None:
        return None
    why = ", ".join(part for part in (entry.get("cause"), entry.get("reason"), entry.get("since")) if part)
    return f"SAM {entry.get('serial')} is on the SAM blacklist ({entry.get('status')}: {why}); it gets no keys"


def verified_blacklist(tok: Any, path: str | None) -> dict[str, Mapping[str, str]]:
    """The station's installed SAM blacklist, by serial (flows/blacklist.py: station_list).

    It fails closed: no list, or one that is unreadable, fails its MAC, has expired or is older than the highest
    version the station accepted, stops the batch - loading keys while unsure which SAMs were revoked is exactly
    the quiet misuse the blacklist exists to prevent.
    """
    if not path:
        raise SamError("no SAM blacklist path given; no SAM is loaded without a verified blacklist")
    try:
        doc = blacklist.station_list(tok, path, today=network_today())
    except BlacklistError as exc:
        raise SamError(f"the SAM blacklist at {path} is not trustworthy ({exc}); no SAM was loaded") from None
    return {str(entry["serial"]).upper(): entry for entry in doc.get("entries") or []}


def summarise(results: list[SamResult]) -> dict[str, int]:
    out: dict[str, int] = {"total": len(results)}
    for r in results:
        out[r.status] = out.get(r.status, 0) + 1
    return out


def inject(p: Mapping[str, Any], *, check_mode: bool = False) -> dict[str, Any]:
    """The sam_inject module's body: policy first, then PC/SC and the HSM. ``p`` are the module parameters."""
    plans = plan_keys(p["catalogue"], p.get("keys"))  # 第二条(四): refused here, before any reader is touched
    if p.get("city_code") and not CITY_CODE_RE.match(str(p["city_code"])):
        raise PolicyError(f"city_code {p['city_code']!r} is not a 6-digit city code; nothing was sent")
    registry = Registry.load(p["registry"])
    pc = PcscContext()
    try:
        readers = pc.readers(p.get("readers") or ["*"])
    finally:
        pc.close()
    if not readers:
        raise SamError(f"no PC/SC reader matches {p.get('readers')}; is pcscd running and the reader attached?")
    advance = p.get("advance")
    if advance is None:
        advance = not check_mode
    trace: list[str] | None = [] if p.get("trace") else None
    observed = Observed(p["observed_db"]) if not check_mode else _maybe_observed(p["observed_db"])
    try:
        with hsm_session(p["pkcs11_library"], p["token_label"], p["user_pin"], rw=False) as tok:
            tok.validity_lookup = load_catalogue(p["catalogue"]).validity_for  # an expired key is never used
            crypto = SamCrypto(tok, p["sam_issuer_label"], p["batch_kek_label"])
            blacklisted = verified_blacklist(tok, p.get("blacklist"))
            injector = Injector(
                blacklisted=blacklisted,
                plans=plans,
                registry=registry,
                observed=observed,
                crypto=crypto,
                station=p["station"],
                operator=p["operator"],
                city_code=p.get("city_code") or "",
                holder=p.get("holder") or "",
                check_mode=check_mode,
                test_card=p.get("test_card"),
            )
            reader_errors: list[str] = []
            timing: dict[str, float] = {}
            try:
                results = run_batch(
                    injector,
                    readers,
                    reader_errors=reader_errors,
                    timing=timing,
                    max_sams=p.get("max_sams") or 0,
                    idle_timeout=float(p.get("idle_timeout") or 3.0),
                    advance=bool(advance),
                    trace=trace,
                    trace_channel=bool(p.get("trace_channel")),
                    context=PcscContext,
                )
            finally:
                crypto.close()
    finally:
        if observed is not None:
            observed.close()
    out: dict[str, Any] = {
        "changed": any(r.keys_verified for r in results) or (check_mode and any(r.keys_to_load for r in results)),
        "sams": [r.as_dict() for r in results],
        "summary": summarise(results),
        "readers": readers,
        "reader_errors": reader_errors[:50],
        "batch_seconds": round(timing.get("seconds", 0.0), 3),
        "sams_per_minute": round(len(results) * 60 / timing["seconds"], 1) if timing.get("seconds") else 0.0,
        "keys": [{"key": k.key_type, "version": k.version} for k in plans],
    }
    if trace is not None:
        out["trace"] = trace
    return out


def _maybe_observed(path: str) -> Observed | None:
    """Check mode reads the observed registry if it exists and never creates it."""
    return Observed(path) if os.path.exists(path) else None
