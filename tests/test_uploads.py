"""Uploaded files: private per browser, bounded in size, count and disk, removed when unused."""
import os
import stat

import pytest

from engine import SpecError
from serve.uploads import MB, PREFIX, UploadStore, _sweep_stale_stores

ALICE, BOB = "a" * 32, "b" * 32


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "store"
    root.mkdir(mode=0o700)
    return UploadStore(str(root), max_file_bytes=1 * MB, max_files_per_browser=3,
                       max_total_bytes=4 * MB)


def test_a_file_belongs_to_the_browser_that_uploaded_it(store):
    path = store.save(ALICE, b"x,y\n1,2\n")
    assert store.owns(ALICE, path)
    assert not store.owns(BOB, path), "another browser must not read it through a link"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert store.save(ALICE, b"x,y\n1,2\n") == path, "the same bytes reuse the file"
    assert store.save(BOB, b"x,y\n1,2\n") != path, "not shared across browsers by content"


@pytest.mark.parametrize("path", ["/etc/passwd", "", None, 3, "../../etc/passwd", "a\x00b"])
def test_paths_outside_the_store_are_not_uploads(store, path):
    assert not store.owns(ALICE, path)


def test_a_planted_link_inside_a_browser_folder_is_not_an_upload(store):
    folder = store.folder(ALICE)
    os.makedirs(folder)
    os.symlink("/etc/passwd", os.path.join(folder, "planted.csv"))
    assert not store.owns(ALICE, os.path.join(folder, "planted.csv"))


def test_a_file_over_the_size_limit_is_refused_with_the_limit(store):
    with pytest.raises(SpecError, match=r"1.5 MB; this server accepts CSV files up to 1 MB"):
        store.save(ALICE, b"0" * int(1.5 * MB))
    assert not os.listdir(store.root) or not os.listdir(store.folder(ALICE))


def test_each_browser_keeps_its_newest_files_and_files_in_use(store):
    paths = [store.save(ALICE, f"x\n{i}\n".encode()) for i in range(3)]
    newest = store.save(ALICE, b"x\n99\n", in_use={paths[0]})
    kept = {p for p in paths + [newest] if os.path.exists(p)}
    assert kept == {paths[0], paths[2], newest}, "the oldest unused file went first"


def test_the_disk_budget_evicts_unused_files_then_refuses(store):
    big = b"0" * (MB - 10)
    a = [store.save(ALICE, big[:-i]) for i in (1, 2, 3)]
    b = store.save(BOB, big[:-4], in_use=set(a))
    assert os.path.exists(b)
    with pytest.raises(SpecError, match="space for uploads is full"):
        store.save(BOB, big[:-5], in_use=set(a) | {b})
    store.save(BOB, big[:-6], in_use={b})  # now the others may go
    assert sum(1 for p in a if os.path.exists(p)) < 3


def test_release_deletes_only_unused_files_of_the_store(store, tmp_path):
    path = store.save(ALICE, b"x\n1\n")
    store.release(path, in_use={path})
    assert os.path.exists(path)
    store.release(path)
    assert not os.path.exists(path)
    outside = tmp_path / "keep.csv"
    outside.write_text("x")
    store.release(str(outside))
    store.release(os.path.join(store.root, "..", "keep.csv"))
    assert outside.exists(), "release never deletes anything outside the store"


def test_a_server_store_is_private_fresh_and_removed_at_exit(tmp_path, monkeypatch):
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # mkdtemp and the sweep look here
    store, second = UploadStore(), UploadStore()
    try:
        assert os.path.dirname(store.root) == str(tmp_path)
        assert os.path.basename(store.root).startswith(PREFIX)
        assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
        assert second.root != store.root, "every server gets a fresh folder"
    finally:
        store.clear()
        second.clear()
    assert not os.path.exists(store.root)


def test_stores_of_dead_servers_are_swept(tmp_path, monkeypatch):
    import subprocess
    import sys
    import tempfile
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale, alive = tmp_path / (PREFIX + "stale"), tmp_path / (PREFIX + "alive")
    for folder, pid in ((stale, dead), (alive, str(os.getpid()))):
        folder.mkdir()
        (folder / "owner.pid").write_text(pid)
    _sweep_stale_stores()
    assert not stale.exists() and alive.exists()
