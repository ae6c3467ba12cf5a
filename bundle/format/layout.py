"""Every name on disk, written once: the files and folders of a bundle and of a root.

A version directory::

    <root>/<version>/
      manifest.json            written last; its presence makes the version visible
      model.keras              Keras v3 native format
      steps/NNN-<pre|post>-<class>.<ext>
      custom_objects/<name>.pkl
      example/                 the input example and the outputs it produced at save time
      requirements.txt         the training environment's versions
      profile/                 the training profile: profile.json + profile.npz (drift)
      README.md                the generated model card
      model.sig                optional: an OpenSSF model_signing signature over all of the
                               above (written by `bundle sign`, never listed in the manifest)

Next to the versions, a root keeps hidden bookkeeping that is never a version:
``.staging-*`` (saves in progress), ``.trash-*`` (overwritten versions being removed),
``.replaced-<id>-<version>`` (a version set aside while an overwrite moves the new one in,
where the OS cannot swap folders atomically), ``.aliases/<alias>/`` (one record per move of
an alias) and, from older releases, ``.claims/`` (object storage's version claims).

On object storage a version's files live under ``<version>/.gen-<generation>/``, where the
generation is derived from the manifest that ``<version>/manifest.json`` holds: replacing
the manifest (one PUT) switches every file at once.
"""

from __future__ import annotations

__all__ = [
    "ALIASES_DIR",
    "ARCHIVE_FORMATS",
    "ARCHIVE_SUFFIXES",
    "CLAIMS_DIR",
    "CUSTOM_OBJECTS_DIR",
    "EXAMPLE_DIR",
    "GENERATION_PREFIX",
    "MANIFEST_FILE",
    "MODEL_CARD_FILE",
    "MODEL_FILE",
    "PROFILE_ARRAYS",
    "PROFILE_DIR",
    "PROFILE_FILE",
    "REPLACED_PREFIX",
    "REQUIREMENTS_FILE",
    "SIGNATURE_FILE",
    "STAGING_PREFIX",
    "STEPS_DIR",
    "STEP_EXTENSIONS",
    "TRASH_PREFIX",
    "UNLISTED_FILES",
]

# Inside a version directory.
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.keras"
STEPS_DIR = "steps"
CUSTOM_OBJECTS_DIR = "custom_objects"
EXAMPLE_DIR = "example"
REQUIREMENTS_FILE = "requirements.txt"
MODEL_CARD_FILE = "README.md"
PROFILE_DIR = "profile"
PROFILE_FILE = f"{PROFILE_DIR}/profile.json"
PROFILE_ARRAYS = f"{PROFILE_DIR}/profile.npz"
# The signature signs the manifest and every file it lists, so it cannot be listed itself:
# integrity checks skip it as they skip the manifest, and `model_signing` leaves the
# signature file out of what it hashes. Its name is `model_signing`'s default.
SIGNATURE_FILE = "model.sig"
# The files of a version directory that its file table never lists.
UNLISTED_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
# A step's file extension by serializer.
STEP_EXTENSIONS = {"native": "npz", "joblib": "joblib", "cloudpickle": "pkl"}

# Inside a root, next to the versions.
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
REPLACED_PREFIX = ".replaced-"
GENERATION_PREFIX = ".gen-"
ALIASES_DIR = ".aliases"
CLAIMS_DIR = ".claims"

# Release archives: file name suffix -> archive format.
ARCHIVE_FORMATS = {".tar.gz": "tar.gz", ".tgz": "tar.gz", ".zip": "zip"}
ARCHIVE_SUFFIXES = tuple(ARCHIVE_FORMATS)
