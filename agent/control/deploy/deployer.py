"""Model deployment over MQTT: `<prefix>/<device>/deploy` -> download, verify, load, test, switch.

Three threads take part, and none waits for another:
- paho's network thread calls `on_deploy`, which only parses the command and starts a worker;
- the worker downloads the archive, checks its sha256, unpacks it, verifies every file of the
  bundle, loads it in a second Detector and runs it once on the latest frame (`model_probe`);
- the frame loop owns the detector: between two frames it takes the ready bundle
  (`take_ready`), switches, and keeps the old detector for a few frames. If the new one fails
  on one of them the loop returns to the old one (`rolled_back`); otherwise the deployment is
  confirmed, recorded in the state directory (so it survives a restart) and published `active`.

One deployment runs at a time; a `deploy` that arrives meanwhile is refused as busy. Progress
and outcome are published retained on `deploy/state`; refusals of a command that started
nothing (malformed, busy) are published there too, not retained, so the retained state keeps
describing the device's last real deployment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.bundle import DEFAULT_PAD_VALUE, BundleError, load_bundle, verify_model_file
from agent.control.deploy.active_bundle import (
    BUNDLES_DIR,
    DEPLOYED_RE,
    ActiveBundle,
    StartupModel,
    deployed_dir,
    write_active,
)
from agent.control.deploy.archive import STAGING_PREFIX, ArchiveError, DiskFullError, UnpackLimits, unpack_bundle
from agent.control.deploy.download import DownloadError, DownloadLimits, download
from agent.control.deploy.probe import ProbeError, probe
from agent.control.deploy.request import (
    ACTIVE,
    DOWNLOADING,
    FAILED,
    ROLLED_BACK,
    VERIFYING,
    DeployRejected,
    DeployRequest,
    parse_deploy,
    state_payload,
)
from agent.control.deploy.switchover import PROBATION_FRAMES
from agent.control.response_topics import ResponseTopics
from agent.pipeline.detector import Detector, ModelIdentity
from agent.pipeline.inference import ModelLoadError
from agent.transport.encoding import dumps
from agent.transport.publisher import ReplyTo
from agent.transport.topics import DEPLOY_STATE
from agent.urls import scrub, traceback_text

if TYPE_CHECKING:
    from agent.config import DeployConfig

log = logging.getLogger("yolo_edge.deploy")

UNPACKED_RATIO = 2  # ONNX weights barely compress: a bundle unpacks to little more than its archive
CLOSE_WAIT_S = 2.0


@dataclass(frozen=True)
class DeploySettings:
    """state_dir: where bundles are unpacked and the active one recorded. keep_bundles: deployed bundles kept."""

    state_dir: Path
    limits: DownloadLimits
    keep_bundles: int = 3

    @classmethod
    def from_config(cls, deploy: DeployConfig, state_dir: Path) -> DeploySettings:
        limits = DownloadLimits(deploy.max_bytes, deploy.timeout_s, deploy.max_duration_s, deploy.allow_http)
        return cls(Path(state_dir), limits, deploy.keep_bundles)


@dataclass(frozen=True)
class ReadyBundle:
    """A bundle that passed every check and its first inference, waiting for the frame loop to switch to it."""

    request: DeployRequest
    path: Path
    detector: Detector


class _Failed(Exception):
    """A deployment step failed for a reason the operator can act on."""


class Deployer:
    """Runs deployments and publishes their state; the frame loop calls the methods marked (frame loop).

    load: path -> Detector with the configured precision policy, threads and thresholds (raises
    BundleError / ModelLoadError). publish: (payload, retain) -> None for `deploy/state`. responses:
    where an MQTT 5 command's response topic is answered as well (None: not over MQTT).
    """

    def __init__(
        self,
        settings: DeploySettings,
        load: Callable[[Path], Detector],
        publish: Callable[[bytes, bool], None],
        startup: StartupModel,
        responses: ResponseTopics | None = None,
    ) -> None:
        self.settings = settings
        self._load = load
        self._publish = publish
        self._responses = responses
        self._startup = startup
        self._bundles = Path(settings.state_dir) / BUNDLES_DIR
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._busy: DeployRequest | None = None  # from the command until its outcome
        self._ready: ReadyBundle | None = None
        self._worker: threading.Thread | None = None
        self._active = startup.deployed  # the recorded deployment, if the agent runs it
        self._running = startup.path  # the bundle the frame loop runs now
        self._previous: Path | None = None  # the one it ran before the last switch: kept on disk
        self._frame: np.ndarray | None = None
        self._remove_leftovers()

    # -- paho's network thread --------------------------------------------------------------------

    def on_deploy(self, payload: bytes, reply_to: ReplyTo | None = None) -> None:
        """A `deploy` message: start a deployment, or answer on `deploy/state` why not.

        reply_to: the MQTT 5 response topic and correlation data the message carried; every state
        of this deployment goes there too when it lies in the device's reply subtree (response_topics.py).
        """
        if self._responses is not None:
            reply_to = self._responses.checked(reply_to, "deploy", DEPLOY_STATE)
        try:
            request = replace(parse_deploy(payload, self.settings.limits.allow_http), reply_to=reply_to)
        except DeployRejected as rejected:
            log.warning("deploy refused: %s", rejected)
            self._state(FAILED, None, str(rejected), retain=False, request_id=rejected.request_id, reply_to=reply_to)
            return
        with self._lock:
            if self._cancel.is_set():
                return
            busy, active = self._busy, self._active
            already = busy is None and active is not None and active.sha256 == request.sha256
            already = already and active is not None and self._running == active.path
            if busy is None and not already:
                self._busy = request
        if busy is not None:
            reason = f"busy: deploying {busy.sha256[:16]} from {busy.shown_url}; send it again once that one ended"
            log.warning("deploy of %s refused: %s", request.sha256[:16], reason)
            self._state(FAILED, request, reason, retain=False)
        elif already:
            log.info("deploy of %s: already the active bundle", request.sha256[:16])
            self._state(ACTIVE, request, None, note="already active")
        else:
            log.info("deploy of %s from %s started", request.sha256[:16], request.shown_url)
            self._worker = threading.Thread(target=self._deploy, args=(request,), name="deploy", daemon=True)
            self._worker.start()

    # -- the worker thread ------------------------------------------------------------------------

    def _deploy(self, request: DeployRequest) -> None:
        dest = deployed_dir(self.settings.state_dir, request.sha256)
        unpacked = False
        try:
            self._state(DOWNLOADING, request)
            self._bundles.mkdir(parents=True, exist_ok=True)
            archive = self._bundles / f"{STAGING_PREFIX}{uuid.uuid4().hex}.tar.gz"
            try:
                downloaded = download(request.url, archive, self.settings.limits, self._cancel)
                if downloaded.sha256 != request.sha256:
                    raise _Failed(
                        f"sha256 mismatch: the archive's is {downloaded.sha256}, the command's {request.sha256}; "
                        "send the sha256 that yolo-edge-convert --archive printed for this file"
                    )
                self._state(VERIFYING, request, bytes=downloaded.bytes)
                self._clear(dest)
                unpack_bundle(archive, dest, UnpackLimits(UNPACKED_RATIO * self.settings.limits.max_bytes))
                unpacked = True
            finally:
                archive.unlink(missing_ok=True)
            bundle = load_bundle(dest)
            for precision in bundle.files:  # every file, not only the one the precision policy picks
                verify_model_file(bundle, precision)
            detector = self._load(dest)
            probe(detector, self._probe_frame(detector), bundle.imgsz)
        except (_Failed, DownloadError, ArchiveError, DiskFullError, BundleError, ModelLoadError, ProbeError) as error:
            self._fail(request, str(error), dest if unpacked else None)
            return
        except OSError as error:
            self._fail(request, f"cannot write the bundle under {self._bundles}: {error}", dest if unpacked else None)
            return
        except Exception as error:  # a bug must not leave the deployment slot taken forever
            # Not log.exception: the traceback may quote the URL, and the URL may be a signed one.
            log.error("deployment of %s failed:\n%s", request.sha256[:16], scrub(traceback_text(error), request.url))
            self._fail(request, f"internal error: {type(error).__name__}: {error}", dest if unpacked else None)
            return
        with self._lock:
            if not self._cancel.is_set():
                self._ready = ReadyBundle(request, dest, detector)
        log.info("deploy of %s: verified and tested on a frame; switching between two frames", request.sha256[:16])

    def _probe_frame(self, detector: Detector) -> np.ndarray:
        """The newest frame the loop processed (a reference: frames are never written to); gray before the first."""
        frame = self._frame
        if frame is not None:
            return frame
        height, width = detector.model.info.input_hw
        return np.full((height, width, 3), DEFAULT_PAD_VALUE, np.uint8)

    def _clear(self, dest: Path) -> None:
        """Make room for `dest`: an earlier unpack of the same archive is replaced (never the running bundle)."""
        if dest.exists():
            if dest == self._running:
                raise _Failed(f"{dest} is the bundle running now")
            aside = dest.with_name(f"{STAGING_PREFIX}{dest.name}.old")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(dest, aside)
            shutil.rmtree(aside, ignore_errors=True)

    # -- the frame loop ---------------------------------------------------------------------------

    def offer_frame(self, image: np.ndarray) -> None:
        """The frame just processed (frame loop): what a new model is tested on."""
        self._frame = image

    def take_ready(self) -> ReadyBundle | None:
        """A bundle to switch to, once (frame loop)."""
        with self._lock:
            ready, self._ready = self._ready, None
        return ready

    def switched(self, ready: ReadyBundle) -> None:
        """The frame loop runs `ready` now and keeps the old detector until confirmed() or rolled_back()."""
        with self._lock:
            self._previous, self._running = self._running, ready.path
        log.info(
            "switched to %s (%s); confirming on the next %d frames",
            ready.path,
            ready.detector.identity.name,
            PROBATION_FRAMES,
        )

    def refused(self, ready: ReadyBundle, reason: str) -> None:
        """The frame loop did not switch to `ready` (it would not fit the settings in force)."""
        self._fail(ready.request, reason, ready.path)

    def confirmed(self, ready: ReadyBundle) -> None:
        """`ready` got through its first frames in the loop: record it, publish `active`, tidy the disk."""
        request, identity = ready.request, ready.detector.identity
        record = ActiveBundle(ready.path, request.sha256, request.shown_url, round(time.time(), 3))
        extra: dict[str, object] = {"model": identity.as_dict()}
        try:
            write_active(self.settings.state_dir, record)
        except OSError as error:
            # It runs, but the next start would not find it: say so rather than pretend.
            extra["warning"] = f"not recorded in {self.settings.state_dir}: {error}; a restart runs the previous model"
            log.error("deploy of %s: %s", request.sha256[:16], extra["warning"])
        with contextlib.suppress(OSError):
            os.utime(ready.path)  # pruning keeps the most recently activated bundles
        with self._lock:
            self._active, self._busy = record, None
        self._prune()
        log.info("deploy of %s: active (%s %s)", request.sha256[:16], identity.name, identity.precision)
        self._state(ACTIVE, request, None, **extra)

    def rolled_back(self, ready: ReadyBundle, reason: str, identity: ModelIdentity) -> None:
        """The new model failed in the frame loop, which returned to the old one (`identity`)."""
        with self._lock:
            self._running, self._previous = self._previous or self._running, None
        log.warning("deploy of %s rolled back to %s: %s", ready.request.sha256[:16], identity.name, reason)
        self._finish(ready.request, ROLLED_BACK, reason, ready.path, model=identity.as_dict())

    def announce_startup(self, identity: ModelIdentity) -> None:
        """At start: `active` when a deployed bundle runs, `rolled_back` when the recorded one failed to load."""
        startup = self._startup
        if startup.record is None:
            return
        request = DeployRequest(startup.record.url, startup.record.sha256)
        if startup.fallback_reason is None:
            self._state(ACTIVE, request, None, model=identity.as_dict(), note="started with the deployed bundle")
        else:
            reason = f"{startup.fallback_reason}; running [model] path {startup.path}"
            self._state(ROLLED_BACK, request, reason, model=identity.as_dict())

    def close(self) -> None:
        """Stop: cancel a download in progress, and say on `deploy/state` that a deployment was cut short."""
        with self._lock:
            self._cancel.set()
            busy, self._ready = self._busy, None
            worker = self._worker
        if worker is not None:
            worker.join(CLOSE_WAIT_S)
            # A download blocked in a read notices the cancel only at its timeout: its partial file goes now.
            self._remove_leftovers()
        if busy is not None:
            reason = "the agent stopped during the deployment; send deploy again"
            log.warning("deploy of %s: %s", busy.sha256[:16], reason)
            self._state(FAILED, busy, reason)

    # -- helpers ----------------------------------------------------------------------------------

    def _fail(self, request: DeployRequest, reason: str, unpacked: Path | None) -> None:
        # Reasons quote exceptions, which may quote the URL: scrubbed once here for the log and deploy/state.
        reason = scrub(reason, request.url)
        log.warning("deploy of %s failed: %s", request.sha256[:16], reason)
        self._finish(request, FAILED, reason, unpacked)

    def _finish(self, request: DeployRequest, state: str, reason: str, unpacked: Path | None, **extra: object) -> None:
        with self._lock:
            self._busy = None
            keep = {self._running, self._previous}
        if unpacked is not None and unpacked not in keep:
            shutil.rmtree(unpacked, ignore_errors=True)  # a bundle that failed is not worth the disk
        if self._cancel.is_set():
            return  # close() reports the deployment it cut short
        self._state(state, request, reason, **extra)

    def _state(
        self,
        state: str,
        request: DeployRequest | None,
        reason: str | None = None,
        retain: bool = True,
        reply_to: ReplyTo | None = None,
        **extra: Any,
    ) -> None:
        payload = dumps(state_payload(state, request, reason, **extra))
        self._publish(payload, retain)
        route = request.reply_to if request is not None else reply_to
        if route is not None and self._responses is not None:
            self._responses.send(route, payload)

    def _remove_leftovers(self) -> None:
        """Downloads and unpacks a crash or power cut interrupted."""
        try:
            leftovers = [p for p in self._bundles.iterdir() if p.name.startswith(STAGING_PREFIX)]
        except OSError:
            return
        for path in leftovers:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _prune(self) -> None:
        """Keep the newest `keep_bundles` deployed bundles; never the running one or the one before it."""
        with self._lock:
            keep = {self._running, self._previous}
        try:
            deployed = [p for p in self._bundles.iterdir() if DEPLOYED_RE.fullmatch(p.name) and p.is_dir()]
            deployed.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        room = self.settings.keep_bundles - len([p for p in deployed if p in keep])
        for path in deployed:
            if path in keep:
                continue
            if room > 0:
                room -= 1
                continue
            log.info(
                "removing the old deployed bundle %s ([deploy] keep_bundles = %d)", path, self.settings.keep_bundles
            )
            shutil.rmtree(path, ignore_errors=True)
