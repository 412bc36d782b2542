"""Locates the real medical images that ship inside installable packages (never downloads).

Sources (every one a package on PyPI or Debian; docs/readers.md lists what the tests read):

* ``pydicom`` wheel: ``pydicom/data/test_files`` (CT, MR, US, NM, DICOM-SEG, DICOMDIR tree).
* ``pydicom-data`` wheel: package ``data_store/data`` (CR chest/tibia radiographs, 1024² MR, CT, US cine, SEG).
* ``nibabel`` wheel: ``nibabel/tests/data`` (EPI, T1 anatomical).
* ``nilearn`` wheel (``pip install --no-deps nilearn``): MNI152 2009a T1 and GM/WM probability maps on one grid.
* ``scikit-image`` wheel: ``skimage/data`` (fundus ``retina.jpg``, histology ``ihc.png``).
* Debian ``mricron-data`` (optional, ``make data``): Colin27 T1, skull-stripped Colin27, AAL and Brodmann atlases.

Files are found with ``importlib.util.find_spec`` so no package is imported (importing nilearn pulls in pandas and
sklearn; pydicom's ``get_testdata_file`` would try to download names that pydicom-data lacks). Every lookup of a
missing source raises :class:`MissingSampleError` naming the package and the command that provides it.

Run ``python -m lvmmed.data.samples`` to print what is available on this machine.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

MRICRON_DIR = Path("/usr/share/mricron/templates")


class MissingSampleError(FileNotFoundError):
    """A bundled sample is not installed; the message says which package provides it."""


@dataclass(frozen=True)
class Source:
    """Where a family of bundled files lives and how to install it."""

    name: str
    install: str
    licence: str

    def root(self) -> Path:
        """Returns the source's data folder or raises :class:`MissingSampleError`."""
        root = _SOURCE_ROOTS[self.name]()
        if root is None or not root.is_dir():
            raise MissingSampleError(
                f"Bundled data source '{self.name}' is not installed. Provide it with: {self.install}"
            )
        return root


def _package_dir(package: str, *sub: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)), *sub)


_SOURCE_ROOTS = {
    "pydicom": lambda: _package_dir("pydicom", "data", "test_files"),
    "pydicom-data": lambda: _package_dir("data_store", "data"),
    "nibabel": lambda: _package_dir("nibabel", "tests", "data"),
    "nilearn": lambda: _package_dir("nilearn", "datasets", "data"),
    "scikit-image": lambda: _package_dir("skimage", "data"),
    "mricron-data": lambda: MRICRON_DIR if MRICRON_DIR.is_dir() else None,
}

SOURCES: dict[str, Source] = {
    "pydicom": Source("pydicom", "pip install pydicom==3.0.2", "MIT"),
    "pydicom-data": Source("pydicom-data", "pip install pydicom-data==1.0.0", "MIT"),
    "nibabel": Source("nibabel", "pip install nibabel==5.4.2", "MIT"),
    "nilearn": Source("nilearn", "pip install --no-deps nilearn==0.14.1", "BSD-3 (MNI ICBM152: MNI/McConnell notice)"),
    "scikit-image": Source("scikit-image", "pip install scikit-image==0.26.0", "BSD-3 (retina.jpg CC0)"),
    "mricron-data": Source(
        "mricron-data",
        "make data   (runs: apt-get install -y mricron-data)",
        "MRIcron BSD-3; Colin27 MNI notice; AAL/Brodmann research use",
    ),
}

# name -> (source, relative path, description)
SAMPLES: dict[str, tuple[str, str, str]] = {
    # pydicom's own test files
    "ct_small": ("pydicom", "CT_small.dcm", "CT 128x128 (NEMA WG04 CT1, downsized)"),
    "mr_small": ("pydicom", "MR_small.dcm", "MR 64x64"),
    "mr_small_rle": ("pydicom", "MR_small_RLE.dcm", "MR 64x64, RLE lossless"),
    "mr_small_jpeg_ls": ("pydicom", "MR_small_jpeg_ls_lossless.dcm", "MR 64x64, JPEG-LS (needs a plugin)"),
    "mr_abdomen_overlay": ("pydicom", "examples_overlay.dcm", "MR abdomen 300x484 (Siemens MPR)"),
    "us_palette": ("pydicom", "examples_palette.dcm", "US 350x800 palette colour"),
    "us_rgb": ("pydicom", "examples_rgb_color.dcm", "US 240x320 RGB"),
    "us_cine": ("pydicom", "examples_ybr_color.dcm", "US cine 30x240x320 YBR (JPEG baseline)"),
    "nm_j2k": ("pydicom", "JPEG2000.dcm", "NM 1024x256 (JPEG 2000)"),
    "seg_liver_1frame": ("pydicom", "liver_1frame.dcm", "DICOM-SEG liver mask 512x512"),
    "dicomdir_tree": ("pydicom", "dicomdirtests", "DICOMDIR tree with tiny CT/MR/CR series"),
    # pydicom-data
    "cr_chest": ("pydicom-data", "RG1_UNCR.dcm", "CR chest PA radiograph 1955x1841"),
    "cr_tibia": ("pydicom-data", "RG3_UNCR.dcm", "CR distal tibia radiograph 1760x1760"),
    "mr_shoulder": ("pydicom-data", "MR2_UNCR.dcm", "MR shoulder 1024x1024"),
    "ct_axial": ("pydicom-data", "693_UNCR.dcm", "CT axial 512x512"),
    "ct_enhanced_multiframe": ("pydicom-data", "eCT_Supplemental.dcm", "enhanced multi-frame CT 2x512x512"),
    "mr_enhanced_multiframe": ("pydicom-data", "emri_small.dcm", "enhanced multi-frame MR head 10x64x64"),
    "mr_abdomen_siemens": ("pydicom-data", "MR-SIEMENS-DICOM-WithOverlays.dcm", "MR abdomen 484x484"),
    "us_ge": ("pydicom-data", "US1_UNCR.dcm", "US 480x640 RGB (GE)"),
    "us_obstetric": ("pydicom-data", "OBXXXX1A.dcm", "US obstetric 600x800"),
    "us_cine_120": ("pydicom-data", "color3d_jpeg_baseline.dcm", "US cine 120x480x640 RGB"),
    "seg_liver": ("pydicom-data", "liver.dcm", "DICOM-SEG liver 3x512x512"),
    # nibabel
    "epi_4d": ("nibabel", "example4d.nii.gz", "EPI 128x96x24x2 @2mm"),
    "t1_anatomical": ("nibabel", "anatomical.nii", "T1 33x41x25 @2mm"),
    "nibabel_dicom_0": ("nibabel", "0.dcm", "Siemens MR DICOM"),
    # nilearn MNI152 2009a
    "mni152_t1": ("nilearn", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "MNI152 2009a T1 197x233x189 @1mm"),
    "mni152_gm": ("nilearn", "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz", "MNI152 GM probability (0-255)"),
    "mni152_wm": ("nilearn", "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz", "MNI152 WM probability (0-255)"),
    # scikit-image
    "retina": ("scikit-image", "retina.jpg", "fundus photograph 1411x1411 RGB (CC0)"),
    "ihc": ("scikit-image", "ihc.png", "immunohistochemistry 512x512 RGB"),
    # Debian mricron-data
    "colin27_t1": ("mricron-data", "ch2.nii.gz", "Colin27 T1 181x217x181 @1mm"),
    "colin27_bet": ("mricron-data", "ch2bet.nii.gz", "Colin27 skull-stripped (brain mask = >0)"),
    "aal": ("mricron-data", "aal.nii.gz", "AAL atlas, 116 regions, ch2 grid"),
    "aal_labels": ("mricron-data", "aal.nii.txt", "AAL region names"),
    "brodmann": ("mricron-data", "brodmann.nii.gz", "Brodmann areas, ch2 grid"),
}


def path(name: str) -> Path:
    """Returns the local path of a bundled sample.

    Args:
        name: A key of :data:`SAMPLES` (``python -m lvmmed.data.samples`` lists them).

    Raises:
        KeyError: Unknown sample name.
        MissingSampleError: The providing package is not installed (the message says how to install it).
    """
    if name not in SAMPLES:
        raise KeyError(f"Unknown bundled sample '{name}'. Known: {', '.join(sorted(SAMPLES))}")
    source, rel, _ = SAMPLES[name]
    file = SOURCES[source].root() / rel
    if not file.exists():
        raise MissingSampleError(
            f"Bundled sample '{name}' ({rel}) is missing from the installed '{source}' package; "
            f"reinstall it with: {SOURCES[source].install}"
        )
    return file


def is_available(name: str) -> bool:
    """True when :func:`path` would succeed for ``name``."""
    try:
        path(name)
    except MissingSampleError:
        return False
    return True


def source_available(source: str) -> bool:
    """True when a whole source (e.g. ``"mricron-data"``) is installed."""
    try:
        SOURCES[source].root()
    except MissingSampleError:
        return False
    return True


def available() -> dict[str, Path]:
    """Returns every bundled sample present on this machine."""
    return {name: path(name) for name in SAMPLES if is_available(name)}


def main() -> None:
    """Prints the availability of every source and sample."""
    for src in SOURCES.values():
        status = "ok" if source_available(src.name) else f"MISSING  -> {src.install}"
        print(f"[{src.name}] {status}")
        for name, (s, _rel, desc) in SAMPLES.items():
            if s == src.name:
                mark = "+" if is_available(name) else "-"
                print(f"   {mark} {name:24s} {desc}")


if __name__ == "__main__":
    main()
