#!/usr/bin/env python3
"""Waits until one tree lists what another lists, for bench/node_bench.sh.

  tree_wait.py WANT GOT [TIMEOUT_SECONDS]

"Lists the same" means the same regular files by relative path, size and
whole-second mtime, skipping each tool's own metadata and temporary files
(.meshsync, .stfolder, .syncthing.*).

It starts following GOT at once and prints "ready". Then it reads a line
from stdin holding the time (Unix seconds) the measured sync started, once
WANT has changed, lists WANT, and waits for GOT to match. It prints the time
GOT came to match (never before the start) and exits 0, or exits 1 with a
message if GOT does not match within the timeout (default 1800 s).

The tools under test share the machine's two cores with this wait, and a
listing of 10,000 files costs about 130 ms of CPU here (a stat per file).
Listing GOT every 20 ms took most of a core from the tools, and a match was
seen up to a listing and a sleep late: about 0.3 s of a 0.9 s sync, more
with this program's own start-up. So GOT is listed once, before the sync,
and then kept up to date from inotify events on a thread of its own, which
notes when the listing last changed: a name that an event reports is
stat'ed again, a new directory is watched and listed, and anything else (a
directory moved or deleted, a lost event) lists the tree again, as does
every 5 s without a match. A match is confirmed by a full listing; if that
disagrees, the wait goes on.
"""
import ctypes
import errno
import os
import select
import stat
import struct
import sys
import threading
import time

IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
WATCH = (IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
         | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW)
EVENT = struct.Struct("iIII")

libc = ctypes.CDLL(None, use_errno=True)


def skipped(name):
    return name in (".meshsync", ".stfolder") or name.startswith(".syncthing.")


def walk(root, start, on_file, on_dir=None):
    """Walks root/start: on_dir(rel, path) before each directory is listed
    (False: skip it), on_file(rel, (size, mtime second)) for each regular
    file. Files and directories may come and go meanwhile."""
    stack = [start]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel)
        if on_dir is not None and not on_dir(rel, path):
            continue
        try:
            entries = os.scandir(path)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if skipped(entry.name):
                    continue
                child = os.path.join(rel, entry.name)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(child)
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        on_file(child, (st.st_size, int(st.st_mtime)))
                except OSError:
                    continue


def listing(root):
    """The regular files under root: {relative path: (size, mtime second)}."""
    found = {}
    walk(root, "", found.__setitem__)
    return found


class WatchedTree:
    """A tree's listing, kept up to date from inotify events."""

    def __init__(self, root):
        self.root = root
        self.fd = -1
        self.lock = threading.Condition()
        self.changed_at = time.time()
        self.wanted = None  # WANT's listing, once known
        self.relist()

    def relist(self):
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self.dirs = {}  # watch descriptor -> relative directory path
        old, self.files = getattr(self, "files", None), {}
        changed_at = self.changed_at
        self.add_tree("")
        if self.files == old:
            self.changed_at = changed_at

    def add_tree(self, relative):
        walk(self.root, relative, self.note, self.watch)

    def watch(self, rel, path):
        # Watched before it is listed: a file made in between shows up in both.
        wd = libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH)
        if wd < 0:
            err = ctypes.get_errno()
            if rel and err in (errno.ENOENT, errno.ENOTDIR):
                return False  # gone already
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self.dirs[wd] = rel
        return True

    def note(self, rel, value):
        """Records a file's (size, mtime), or None for no file."""
        if self.files.get(rel) == value:
            return
        if value is None:
            del self.files[rel]
        else:
            self.files[rel] = value
        self.changed_at = time.time()

    def refresh(self, rel):
        try:
            st = os.lstat(os.path.join(self.root, rel))
            now = (st.st_size, int(st.st_mtime)) if stat.S_ISREG(st.st_mode) else None
        except OSError:
            now = None
        self.note(rel, now)

    def follow(self):
        """Applies events as they come (on a thread of its own)."""
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 5)
            except (OSError, ValueError):  # relisted meanwhile: a new descriptor
                continue
            with self.lock:
                if ready:
                    self.apply_events()
                elif self.wanted is not None and self.files != self.wanted:
                    self.relist()  # a safety net against events never seen
                self.lock.notify_all()

    def apply_events(self):
        relist = False
        while True:
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                break
            offset = 0
            while offset < len(data):
                wd, mask, _, length = EVENT.unpack_from(data, offset)
                name = data[offset + EVENT.size:offset + EVENT.size + length].rstrip(b"\0")
                offset += EVENT.size + length
                name = os.fsdecode(name)
                if mask & (IN_Q_OVERFLOW | IN_DELETE_SELF | IN_MOVE_SELF):
                    relist = True
                    continue
                if wd not in self.dirs or not name or skipped(name):
                    continue
                rel = os.path.join(self.dirs[wd], name)
                if mask & IN_ISDIR:
                    if mask & (IN_MOVED_FROM | IN_DELETE):
                        relist = True  # its watches name paths that are gone
                    elif mask & (IN_CREATE | IN_MOVED_TO):
                        self.add_tree(rel)
                else:
                    self.refresh(rel)
        if relist:
            self.relist()


def main(argv):
    if len(argv) not in (3, 4):
        sys.stderr.write(__doc__)
        return 2
    want_root, got_root = argv[1], argv[2]
    timeout = float(argv[3]) if len(argv) == 4 else 1800.0
    got = WatchedTree(got_root)
    threading.Thread(target=got.follow, daemon=True).start()
    print("ready", flush=True)
    line = sys.stdin.readline()
    try:
        start = float(line)
    except ValueError:
        sys.stderr.write(f"expected the start time (Unix seconds) on stdin, got {line!r}\n")
        return 2
    want = listing(want_root)
    deadline = time.monotonic() + timeout
    with got.lock:
        got.wanted = want
        while time.monotonic() < deadline:
            if got.files == want:
                matched = max(start, got.changed_at)
                if listing(got_root) == want:
                    print(f"{matched:.3f}", flush=True)
                    return 0
                got.relist()  # an event was missed: start over from a listing
                continue
            got.lock.wait(1)
    sys.stderr.write(f"did not converge within {timeout:.0f} s: {want_root} {got_root}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
