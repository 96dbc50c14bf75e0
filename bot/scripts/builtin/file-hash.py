"""Built-in script file-hash: the SHA-256 and size of one file on this endpoint. Read-only: the file is only
read, in chunks, so a large file needs no memory. A directory is refused with a message, not hashed.

Parameters: path (required) - the absolute path of the file.
"""

import hashlib
import os
import sys

import active_response as ar


def main():
    path = ar.params()["path"]
    if os.path.isdir(path):
        print("refused: %s is a directory; file-hash hashes one file (give the path of a file in it)" % path,
              file=sys.stderr)
        return 2
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        print("cannot read %s: %s" % (path, e.strerror or e), file=sys.stderr)
        return 1
    print("path    %s" % path)
    print("sha256  %s" % digest.hexdigest())
    print("size    %d bytes" % size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
