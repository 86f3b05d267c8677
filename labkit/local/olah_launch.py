"""olah, plus the answers huggingface.co gives that olah's offline mirror mode lacks.

Run by labkit.local.hub with olah's own Python, with olah-cli's arguments;
LABKIT_HUB_MIRRORS names the mirrors folder of olah's config. For repos in that folder:
- unknown repo: 401 RepoNotFound; unknown revision: 404 RevisionNotFound; missing file:
  404 EntryNotFound with X-Repo-Commit (olah answers 401, 500 or resets the connection);
- model info without a revision answers for the default branch (olah: 401);
- model info with ?blobs=true lists each file's blobId, size and lfs (olah: names only);
- tree of a missing folder: 404 EntryNotFound; commits split into title and message, authors
  named by "user" (olah's shape breaks list_repo_commits);
- /api/whoami-v2: 401 at once, no accounts here (olah asks huggingface.co, 504 after 10 s);
- resolve HEAD takes an LFS file's sha256 from its pointer and adds X-Linked-Etag and
  X-Linked-Size (olah re-hashes the whole file on every HEAD), ETags quoted as the Hub does;
- resolve GET streams files from disk (olah reads each whole file into memory) and sends
  the HEAD's Content-Length, ETag and X-Repo-Commit with them (olah: none);
- a repo with .git/labkit-gated (the sha256 of the one token let in) is gated: its info
  says so and its files need that token (401/403 GatedRepo otherwise).
"""

import contextvars
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, unquote

from olah.mirror.repos import LocalMirrorRepo
from starlette.responses import JSONResponse

MIRRORS = Path(os.environ["LABKIT_HUB_MIRRORS"])
GATED_FILE = "labkit-gated"
POINTER = re.compile(
    rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n"
)
CHUNK = 1 << 20
API = re.compile(
    r"/api/(models|datasets|spaces)/([^/]+)/([^/]+)(?:/([a-z-]+)(?:/([^/]+))?(?:/(.*))?)?"
)
RESOLVE = re.compile(r"/(?:(models|datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)")
REVISION_ROUTES = {"revision", "tree", "paths-info", "commits"}
BLOBS = contextvars.ContextVar("labkit_blobs", default=False)


def git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def resolve(repo: Path, rev: str) -> str | None:
    """The commit a revision names, as the Hub reads it: a full commit id, branch or tag."""
    # olah's own venv runs this file without labkit: labkit.util.names.COMMIT, written out.
    if re.fullmatch(r"[0-9a-f]{40}", rev) or rev.startswith("refs/"):
        candidates = [rev]
    else:
        candidates = [f"refs/heads/{rev}", f"refs/tags/{rev}"]
    for name in candidates:
        sha = git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
        if sha:
            return sha
    return None


def error(status: int, code: str | None, message: str, **headers: str) -> JSONResponse:
    headers = {"X-Error-Message": message, **headers}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def gate(repo: Path, repo_id: str, scope: dict) -> JSONResponse | None:
    marker = repo / ".git" / GATED_FILE
    if not marker.is_file():
        return None
    auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    if not token:
        return error(
            401,
            "GatedRepo",
            f"Access to model {repo_id} is restricted. You must have access to it and be "
            "authenticated to access it. Please log in.",
        )
    if hashlib.sha256(token.encode()).hexdigest() != marker.read_text().strip():
        return error(
            403,
            "GatedRepo",
            f"Access to model {repo_id} is restricted and you are not in the authorized list. "
            f"Visit /{repo_id} to ask for access.",
        )
    return None


class HubAnswers:
    """ASGI middleware: the Hub's answers for what olah's offline mirror gets wrong."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        path = raw.split("?", 1)[0]
        response, head = None, None
        if path == "/api/whoami-v2":
            # No accounts here (olah would ask huggingface.co and time out): every token is unknown.
            response = error(401, None, "Invalid credentials in Authorization header")
        elif match := API.fullmatch(path):
            response, scope = self.api(scope, *(unquote(g) if g else g for g in match.groups()))
        elif match := RESOLVE.fullmatch(path):
            response, head = self.resolve(scope, *(unquote(g) if g else g for g in match.groups()))
        if response is not None:
            await response(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = BLOBS.set(query.get("blobs", ["false"])[-1].lower() in ("1", "true"))
        try:
            await self.app(scope, receive, head_sender(send, head) if head else send)
        finally:
            BLOBS.reset(token)

    def api(self, scope, repo_type, org, name, route, rev, subpath):
        if route not in (None, "refs", *REVISION_ROUTES):
            return None, scope
        repo = MIRRORS / repo_type / org / name
        if not (repo / ".git").is_dir():
            return error(401, "RepoNotFound", "Repository not found"), scope
        if route is None:
            branch = git(repo, "symbolic-ref", "--short", "HEAD") or "main"
            path = f"/api/{repo_type}/{org}/{name}/revision/{branch}"
            return None, {**scope, "path": path, "raw_path": path.encode()}
        if route not in REVISION_ROUTES or not rev:
            return None, scope
        sha = resolve(repo, rev)
        if sha is None:
            return error(404, "RevisionNotFound", f"Invalid rev id: {rev}"), scope
        subpath = (subpath or "").strip("/")
        if (
            route == "tree"
            and subpath
            and git(repo, "cat-file", "-t", f"{sha}:{subpath}") != "tree"
        ):
            return error(404, "EntryNotFound", f'{subpath} does not exist on "{rev}"'), scope
        return None, scope

    def resolve(self, scope, repo_type, org, name, rev, file):
        repo_type = repo_type or "models"
        repo = MIRRORS / repo_type / org / name
        if not (repo / ".git").is_dir():
            return error(401, "RepoNotFound", "Repository not found"), None
        if denied := gate(repo, f"{org}/{name}", scope):
            return denied, None
        sha = resolve(repo, rev)
        if sha is None:
            return error(404, "RevisionNotFound", f"Invalid rev id: {rev}"), None
        if git(repo, "cat-file", "-t", f"{sha}:{file}") != "blob":
            return error(404, "EntryNotFound", "Entry not found", **{"X-Repo-Commit": sha}), None
        return None, get_file_head(LocalMirrorRepo(str(repo), repo_type, org, name), sha, file)


def head_sender(send, head: dict):
    """`send` that adds the file's headers to a 200 answer, where olah left them out."""

    async def sender(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 200:
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(k.encode(), v.encode()) for k, v in head.items() if k.encode() not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return sender


def blob(self, commit_hash: str, path: str):
    try:
        commit = self._git_repo.commit(commit_hash)
        entry = commit.tree[path]
    except Exception:  # GitPython and gitdb raise many kinds for a missing commit or path
        return None, None
    return (commit, entry) if entry.type == "blob" else (None, None)


def pointer(self, entry):
    """(sha256, size, object file) when `entry` is an LFS pointer, else None."""
    if not 120 < entry.size < 150:
        return None
    match = POINTER.fullmatch(entry.data_stream.read())
    if match is None:
        return None
    oid = match.group(1).decode()
    store = Path(self._git_repo.working_dir) / ".git" / "lfs" / "objects"
    return oid, int(match.group(2)), store / oid[:2] / oid[2:4] / oid


def get_file_head(self, commit_hash: str, path: str):
    commit, entry = blob(self, commit_hash, path)
    if entry is None:
        return None
    head = {
        "content-length": str(entry.size),
        "x-repo-commit": commit.hexsha,
        "etag": f'"{entry.hexsha}"',
    }
    if lfs := pointer(self, entry):
        oid, size, _ = lfs
        head.update(
            {
                "content-length": str(size),
                "etag": f'"{oid}"',
                "x-linked-etag": f'"{oid}"',
                "x-linked-size": str(size),
            }
        )
    return head


def get_file(self, commit_hash: str, path: str):
    _, entry = blob(self, commit_hash, path)
    if entry is None:
        return None
    lfs = pointer(self, entry)
    if lfs is None:
        return iter([entry.data_stream.read()])
    return read_file(lfs[2])


def read_file(path: Path):
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def patch_get_meta(original):
    def get_meta(self, commit_hash: str):
        meta = original(self, commit_hash)
        if meta is None:
            return None
        if (Path(self._git_repo.working_dir) / ".git" / GATED_FILE).is_file():
            meta["gated"] = "manual"
        if BLOBS.get():
            commit = self._git_repo.commit(commit_hash)
            for sibling in meta["siblings"]:
                entry = commit.tree[sibling["rfilename"]]
                sibling.update(blobId=entry.hexsha, size=entry.size)
                if lfs := pointer(self, entry):
                    oid, size, _ = lfs
                    sibling.update(
                        size=size, lfs={"sha256": oid, "size": size, "pointerSize": entry.size}
                    )
        return meta

    return get_meta


def patch_get_commits(original):
    def get_commits(self, commit_hash: str):
        commits = original(self, commit_hash)
        for item in commits or ():
            # The Hub splits the message into title and body and names authors by "user".
            title, _, body = item["title"].partition("\n")
            item.update(
                title=title.strip(),
                message=body.strip(),
                authors=[{"user": a["name"], "avatar": a.get("avatar")} for a in item["authors"]],
            )
        return commits

    return get_commits


def main() -> None:
    from olah import server

    for name in ("get_meta", "get_commits", "get_file_head", "get_file"):
        if not hasattr(LocalMirrorRepo, name):
            sys.exit(f"olah has no LocalMirrorRepo.{name}: this launcher fits olah 0.5.4")
    LocalMirrorRepo.get_meta = patch_get_meta(LocalMirrorRepo.get_meta)
    LocalMirrorRepo.get_commits = patch_get_commits(LocalMirrorRepo.get_commits)
    LocalMirrorRepo.get_file_head = get_file_head
    LocalMirrorRepo.get_file = get_file
    server.app.add_middleware(HubAnswers)
    sys.argv = ["olah-cli", *sys.argv[1:]]
    server.cli()


if __name__ == "__main__":
    main()
