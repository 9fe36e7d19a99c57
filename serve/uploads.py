"""Uploaded CSV files: private to the browser that uploaded them, bounded, and temporary.

Measured on the first version: uploads were stored by content hash in one shared, world-readable
folder that survived restarts, so a link naming another person's upload loaded their data, a
symlink planted at the folder's path let `/etc/passwd` pass the "is it an upload?" check, and
nothing was ever deleted. Here:

- the store lives in a fresh private folder (`tempfile.mkdtemp`, mode 0700) made when the server
  starts and removed when it stops, so nothing planted beforehand can be reached through it and
  nothing outlives the server;
- each browser (ui/identity.py) has its own sub-folder; a path counts as an upload only when it
  is a regular file (not a link) directly inside *that browser's* folder;
- files are capped in size (the browser's limit is a hint: a rewritten request reached the
  server with 30 MB), in number per browser, and in total bytes on disk; the oldest files no run
  uses go first, and a file is deleted when the run that used it is forgotten.
"""
from __future__ import annotations

import atexit
import glob
import hashlib
import os
import shutil
import stat
import tempfile
import threading

from engine import SpecError

from . import settings

MB = 1024 * 1024
PREFIX = "netlab_uploads_"


class UploadStore:
    def __init__(self, root: str | None = None, max_file_bytes: int | None = None,
                 max_files_per_browser: int = 3, max_total_bytes: int | None = None):
        self.max_file_bytes = max_file_bytes or settings.get("NETLAB_MAX_UPLOAD_MB") * MB
        self.max_total_bytes = max_total_bytes or settings.get("NETLAB_UPLOAD_DISK_MB") * MB
        self.max_files_per_browser = max_files_per_browser
        if root is None:
            _sweep_stale_stores()
            root = tempfile.mkdtemp(prefix=PREFIX)
            with open(os.path.join(root, "owner.pid"), "w") as f:
                f.write(str(os.getpid()))
            atexit.register(self.clear)
        self.root = root
        self._lock = threading.Lock()

    # -- paths
    def folder(self, browser: str) -> str:
        # a hash, so the folder name (which a shared link shows) does not reveal the browser id
        return os.path.join(self.root, hashlib.sha256(browser.encode()).hexdigest()[:20])

    def owns(self, browser: str, path) -> bool:
        """True only for a regular file (not a link) directly inside this browser's folder."""
        if not isinstance(path, str) or not path or "\x00" in path:
            return False
        if os.path.dirname(os.path.normpath(path)) != self.folder(browser):
            return False
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except OSError:
            return False

    # -- writing
    def save(self, browser: str, data: bytes, in_use=frozenset()) -> str:
        """Store `data` for this browser; returns its path. The same bytes uploaded again by the
        same browser reuse the file. Raises SpecError when a limit is hit."""
        limit = self.max_file_bytes
        if len(data) > limit:
            raise SpecError(f"the file is {len(data) / MB:.1f} MB; this server accepts CSV files "
                            f"up to {limit / MB:g} MB")
        folder = self.folder(browser)
        path = os.path.join(folder, hashlib.sha256(data).hexdigest()[:24] + ".csv")
        with self._lock:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            if not self.owns(browser, path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            os.utime(path)  # most recently used: evicted last
            keep = set(in_use) | {path}
            self._evict(self._files(folder), keep, lambda files: len(files) >
                        self.max_files_per_browser)
            self._evict(self._files(self.root, all_folders=True), keep,
                        lambda files: sum(size for _, _, size in files) > self.max_total_bytes)
            if sum(size for _, _, size in self._files(self.root, all_folders=True)) > \
                    self.max_total_bytes:
                os.remove(path)
                raise SpecError("this server's space for uploads is full (files in use by "
                                "running experiments are kept); try again in a few minutes")
        return path

    def release(self, path, in_use=frozenset()) -> None:
        """Delete an upload that no run uses any more (called when a run is forgotten)."""
        if not isinstance(path, str) or path in in_use:
            return
        path = os.path.normpath(path)
        if os.path.dirname(os.path.dirname(path)) != self.root:
            return  # not one of ours: never delete anything else
        with self._lock:
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.remove(path)
            except OSError:
                pass

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # -- bookkeeping
    def _files(self, folder: str, all_folders: bool = False) -> list[tuple[float, str, int]]:
        """(mtime, path, size) of the regular .csv files, oldest first."""
        pattern = os.path.join(folder, "*", "*.csv") if all_folders else os.path.join(folder, "*.csv")
        out = []
        for path in glob.glob(pattern):
            try:
                st_ = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st_.st_mode):
                out.append((st_.st_mtime, path, st_.st_size))
        return sorted(out)

    @staticmethod
    def _evict(files, keep, too_many) -> None:
        for entry in list(files):
            if not too_many(files):
                return
            if entry[1] in keep:
                continue
            try:
                os.remove(entry[1])
            except OSError:
                pass
            files.remove(entry)


def _sweep_stale_stores() -> None:
    """Remove stores left by servers of this user that died without cleaning up."""
    for root in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        try:
            info = os.lstat(root)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue  # a link or someone else's: leave it alone
            with open(os.path.join(root, "owner.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)  # raises if that server is gone
        except ProcessLookupError:
            shutil.rmtree(root, ignore_errors=True)
        except (OSError, ValueError):
            continue
