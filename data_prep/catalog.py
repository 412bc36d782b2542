"""Catalog of the public datasets LVM-Med pretrained on (Nguyen et al., NeurIPS 2023, arXiv 2306.11925).

The 49 folders of ``lvm-med-training-data/`` in the official repository (github.com/duyhominhnguyen/LVM-Med) plus
well-known datasets of the same families (the paper counts 55; the list of the missing ones is not public, so the
additions are marked ``lvmmed_folder=None``). Every entry gives the modality, organ, source format, the on-disk
layout it expects (the layout of the official download, unpacked), the converter and its parameters, the licence
and homepage.
Nothing is downloaded: ``convert NAME --src DIR`` works for entries whose files the user has; when the files do
not match, :class:`LayoutError` shows the expected layout. Licences are summaries: check the homepage terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class LayoutError(ValueError):
    """The files under --src do not match the catalog entry's expected layout (message shows the layout)."""


@dataclass(frozen=True)
class CatalogEntry:
    """One public dataset.

    Attributes:
        name: Catalog key (lower case, used on the command line).
        modality: DICOM-style code (CT, MR, CR/DX for X-ray, MG, US, OCT, ES endoscopy, FUNDUS, DERM, PATH).
        organ: Body part.
        format: Converter (``dicom``, ``nifti``, ``images``).
        layout: Expected on-disk layout under ``--src`` (human-readable).
        expected: Glob patterns (relative to ``--src``) that must each match at least one file.
        config: ConvertConfig overrides applied by ``convert NAME``.
        licence: Licence summary.
        homepage: Where to request/download it.
        lvmmed_folder: Folder name in LVM-Med's released index lists (None = added from the same family).
        notes: Caveats (extra conversion steps, restricted access).
    """

    name: str
    modality: str
    organ: str
    format: str
    layout: str
    expected: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict)
    licence: str = ""
    homepage: str = ""
    lvmmed_folder: str | None = None
    notes: str = ""


_TCIA = "TCIA download tree <PatientID>/<Study>/<Series>/*.dcm (NBIA Data Retriever, 'Descriptive Directory Name')"
_TCIA_LIC = "TCIA: CC BY 3.0/4.0 or TCIA Restricted (see collection page); cite the collection DOI"


def _tcia(name, modality, organ, folder, url, notes="", **cfg) -> CatalogEntry:
    config = {"format": "dicom", "modality": "", "organ": organ, **cfg}
    return CatalogEntry(name, modality, organ, "dicom", _TCIA, ("**/*.dcm",), config, _TCIA_LIC, url, folder, notes)


def _img(name, modality, organ, desc, expected, licence, url, folder, notes="", **cfg) -> CatalogEntry:
    config = {"format": "images", "modality": modality, "organ": organ, **cfg}
    return CatalogEntry(name, modality, organ, "images", desc, tuple(expected), config, licence, url, folder, notes)


def _nii(name, modality, organ, desc, expected, licence, url, folder, notes="", **cfg) -> CatalogEntry:
    config = {"format": "nifti", "modality": modality, "organ": organ, **cfg}
    return CatalogEntry(name, modality, organ, "nifti", desc, tuple(expected), config, licence, url, folder, notes)


_CT = {"ct_window": "wide"}
_NIH = "https://www.cancerimagingarchive.net/collection/"
ENTRIES: list[CatalogEntry] = [
    # --- CT ---
    _tcia("opc_radiomics", "CT", "oropharynx", "OPC-Radiomics_CT_oropharynx", _NIH + "opc-radiomics/", **_CT),
    _tcia("pancreas_ct", "CT", "pancreas", "Pancreas-CT_CT_pancreas", _NIH + "pancreas-ct/", **_CT),
    _tcia("pelvic_reference", "CT", "pelvis", "Pelvic-Reference-Data_CT_pelvic", _NIH + "pelvic-reference-data/",
          **_CT),
    _tcia("tcga_coad", "CT", "colon", "TCGA-COAD_CT_colon", _NIH + "tcga-coad/", **_CT),
    _tcia("tcga_esca", "CT", "esophagus", "TCGA-ESCA_CT_esophagus", _NIH + "tcga-esca/", **_CT),
    _tcia("tcga_thca", "CT", "thyroid", "TCGA-THCA_CT_thyroid", _NIH + "tcga-thca/", **_CT),
    _nii("lits2017", "CT", "liver", "volume-<n>.nii + segmentation-<n>.nii (any sub-folders)",
         ["**/volume-*.nii*", "**/segmentation-*.nii*"], "CC BY-NC-SA 4.0", "https://competitions.codalab.org/competitions/17094",
         "LiTS2017_CT_liver", image_glob="volume-*.nii*", label_pattern="segmentation-{stem}.nii",
         mask_labels=["background", "liver", "tumor"], ct_window="wide",
         notes="label_pattern maps volume-N to segmentation-volume-N: rename segmentation-N to segmentation-volume-N "
         "or pass label_pattern explicitly"),
    CatalogEntry("luna16", "CT", "lung", "nifti", "subset0..9/*.mhd + *.raw (MetaImage)", ("subset*/*.mhd",),
                 {"format": "nifti", "modality": "CT", "organ": "lung", "image_glob": "*.nii*"}, "CC BY 4.0",
                 "https://luna16.grand-challenge.org/", "LUNA2016_CT_lung",
                 "MetaImage is not read by nibabel: convert .mhd to .nii.gz first (e.g. SimpleITK.WriteImage)"),
    _nii("kits19", "CT", "kidney", "case_<nnnnn>/imaging.nii.gz + segmentation.nii.gz",
         ["case_*/imaging.nii.gz"], "CC BY-NC-SA 4.0", "https://github.com/neheller/kits19", "KiTS19_CT_kidney",
         image_glob="imaging.nii.gz", label_pattern="segmentation.nii.gz", patient_from="parent",
         mask_labels=["background", "kidney", "tumor"], ct_window="wide"),
    _img("covidx_ct", "CT", "lung", "<split folder>/*.png slices + labels CSV (file,label,patient)",
         ["**/*.png"], "CC BY-NC-SA 4.0 (COVIDx CT)", "https://github.com/haydengunraj/COVIDNet-CT",
         "COVIDx_CT_lung", layout="flat", notes="convert the official *.txt split files to a CSV file,label,patient",
         patient_from="stem"),
    _nii("mmwhs_ct", "CT", "heart", "ct_train/ct_train_<n>_image.nii.gz + ct_train_<n>_label.nii.gz",
         ["**/*_image.nii.gz"], "research use (MM-WHS challenge terms)", "https://zmiclab.github.io/zxh/0/mmwhs/",
         "MMWHS_CT_heart", image_glob="*_image.nii.gz", label_pattern="{stem}_label.nii.gz", ct_window="wide",
         notes="label values are MM-WHS codes (205, 420, ...), stored as they are when < 256"),
    _nii("msd", "CT", "multi-organ", "Task<NN>_<Name>/imagesTr/*.nii.gz + labelsTr/*.nii.gz",
         ["Task*/imagesTr/*.nii.gz"], "CC BY-SA 4.0", "http://medicaldecathlon.com/", "MSD_CT",
         image_glob="imagesTr/*.nii.gz", label_pattern="../labelsTr/{name}",
         notes="MR tasks (BrainTumour, Heart, Hippocampus, Prostate) need modality=MR"),
    # --- MR ---
    _nii("brats2018", "MR", "brain", "<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz",
         ["**/*_t1.nii.gz", "**/*_seg.nii.gz"], "research use (BraTS terms); cite BraTS papers",
         "https://www.med.upenn.edu/sbia/brats2018/data.html", "BraTS2018_MRI_brain",
         exclude_glob="*_seg.nii.gz", patient_from="parent", label_pattern="{stem}_seg.nii.gz",
         notes="label_pattern pairs only files named <case>_seg; modalities t1/t2/flair become separate volumes"),
    _tcia("prostatex", "MR", "prostate", "PROSTATEx_MRI_prostate", _NIH + "prostatex/"),
    _tcia("tcga_cesc", "MR", "cervix", "TCGA-CESC_MRI_cervix", _NIH + "tcga-cesc/"),
    _nii("adni_15t", "MR", "brain", "ADNI/<subject>/<protocol>/<date>/<image id>/*.nii (NIfTI export)",
         ["**/*.nii*"], "ADNI Data Use Agreement (no redistribution)", "https://adni.loni.usc.edu/",
         "ADNI1_MRI_1.5T", patient_from="parent", notes="DICOM exports: use --format dicom"),
    _nii("adni_3t", "MR", "brain", "ADNI/<subject>/<protocol>/<date>/<image id>/*.nii (NIfTI export)",
         ["**/*.nii*"], "ADNI Data Use Agreement (no redistribution)", "https://adni.loni.usc.edu/",
         "ADNI1_MRI_3T", patient_from="parent"),
    _nii("hippseg2011", "MR", "brain (hippocampus)", "<case>.nii.gz + <case>_seg.nii.gz (layout unverified)",
         ["**/*.nii*"], "research use", "https://www.nitrc.org/", "Hippseg2011_MRI_brain",
         exclude_glob="*_seg.nii*", label_pattern="{stem}_seg.nii.gz",
         notes="LVM-Med's folder name only; the original release was not identified"),
    _nii("mmwhs_mr", "MR", "heart", "mr_train/mr_train_<n>_image.nii.gz + mr_train_<n>_label.nii.gz",
         ["**/*_image.nii.gz"], "research use (MM-WHS challenge terms)", "https://zmiclab.github.io/zxh/0/mmwhs/",
         "MMWHS_MR_heart", image_glob="*_image.nii.gz", label_pattern="{stem}_label.nii.gz"),
    # --- CT/MR mixed (TCIA) ---
    _tcia("hnscc", "CT", "head-neck", "HNSCC_CT_MRI_head-neck", _NIH + "hnscc/"),
    _tcia("tcga_kich", "CT", "kidney", "TCGA-KICH_CT_MRI_kidney", _NIH + "tcga-kich/"),
    _tcia("tcga_kirc", "CT", "kidney", "TCGA-KIRC_CT_MRI_kidney", _NIH + "tcga-kirc/"),
    _tcia("tcga_read", "CT", "rectum", "TCGA-READ_CT_MRI_rectum", _NIH + "tcga-read/"),
    _tcia("tcga_sarc", "CT", "soft tissue", "TCGA-SARC_CT_MRI_sarcoma", _NIH + "tcga-sarc/"),
    # --- X-ray ---
    CatalogEntry("vinbigdata", "DX", "chest", "dicom", "train/*.dicom (+ train.csv box labels, not converted)",
                 ("train/*.dicom",), {"format": "dicom", "organ": "chest", "image_glob": "*.dicom"},
                 "VinDr-CXR: PhysioNet Credentialed / Kaggle competition rules",
                 "https://www.kaggle.com/c/vinbigdata-chest-xray-abnormalities-detection", "VinBigData_X-ray_lung"),
    _img("shenzhen", "CR", "chest", "CXR_png/CHNCXR_<nnnn>_<0|1>.png (+ labels CSV file,label)",
         ["**/CHNCXR_*.png"], "public domain (NLM)", "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html",
         "Shenzhen_X-ray_lung", layout="flat", exclude_glob="*mask*"),
    _img("rsna_bone_age", "CR", "hand", "boneage-training-dataset/<id>.png + boneage-training-dataset.csv",
         ["**/*.png", "*.csv"], "RSNA challenge terms (research)", "https://www.rsna.org/rsnai/ai-image-challenge/rsna-pediatric-bone-age-challenge-2017",
         "RSNA-BoneAge_X-ray", layout="flat", labels="boneage-training-dataset.csv", labels_file_column="id",
         labels_label_column="male", notes="label = sex (bone age in months is a regression target)"),
    _img("dental_panoramic", "DX", "teeth", "Images/*.png (+ Segmentation1/ masks)", ["**/*.png"],
         "CC BY 4.0 (Abdi et al. 2015)", "https://data.mendeley.com/datasets/hxt48yk462/1",
         "Dental_X-ray_panoramic", layout="flat", exclude_glob="Segmentation*/*"),
    _img("shoulder_xray", "DX", "shoulder", "<class>/*.png or *.jpg", ["**/*.png"], "see source page",
         "https://stanfordmlgroup.github.io/competitions/mura/", "Shoulder_X-ray",
         notes="LVM-Med folder name; MURA XR_SHOULDER is the likely source"),
    _tcia("cbis_ddsm", "MG", "breast", "CBIS-DDSM_mammography", _NIH + "cbis-ddsm/"),
    # --- ultrasound, OCT ---
    _img("hc18", "US", "fetal head", "training_set/<n>_HC.png + <n>_HC_Annotation.png", ["training_set/*_HC.png"],
         "CC BY 4.0", "https://hc18.grand-challenge.org/", "HC18_US_fetal-head", layout="flat",
         exclude_glob="*_Annotation.png", notes="annotations are ellipse outlines, not converted to masks"),
    _img("oct2017", "OCT", "retina", "OCT2017/{train,test}/{CNV,DME,DRUSEN,NORMAL}/*.jpeg",
         ["**/NORMAL/*.jpeg"], "CC BY 4.0 (Kermany et al. 2018)", "https://data.mendeley.com/datasets/rscbjbr9sj/3",
         "Heidelberg_OCT_eye", layout="classes"),
    # --- endoscopy / surgery ---
    _img("hyperkvasir", "ES", "gastrointestinal", "labeled-images/<tract>/<group>/<finding>/*.jpg",
         ["labeled-images/**/*.jpg"], "CC BY 4.0", "https://datasets.simula.no/hyper-kvasir/",
         "HyperKvasir_endoscopy_colon", layout="classes", image_glob="labeled-images/**/*.jpg"),
    _img("kvasir", "ES", "gastrointestinal", "kvasir-dataset-v2/<class>/*.jpg", ["**/*.jpg"],
         "research/education use (Simula)", "https://datasets.simula.no/kvasir/", "Kvasir_endoscopy",
         layout="classes"),
    _img("saras_mesad", "ES", "prostate (surgery)", "<video>/*.jpg frames", ["**/*.jpg"], "CC BY-NC-SA 4.0",
         "https://saras-mesad.grand-challenge.org/", "SARAS-MESAD_surgery", layout="flat", patient_from="parent"),
    _img("m2caiseg", "ES", "abdomen (laparoscopy)", "images/*.jpg + masks/*.png (rename groundtruth/ to masks/)",
         ["images/*", "masks/*"], "research use", "https://www.kaggle.com/datasets/salmanmaq/m2caiseg",
         "m2caiSeg_laparoscopic", layout="pairs"),
    # --- fundus, dermoscopy ---
    _img("eyepacs", "FUNDUS", "retina", "train/*.jpeg + trainLabels.csv (image,level)", ["train/*.jpeg"],
         "Kaggle competition rules (research)", "https://www.kaggle.com/c/diabetic-retinopathy-detection",
         "EyePACS_fundus", layout="flat", labels="trainLabels.csv", labels_file_column="image",
         labels_label_column="level"),
    _img("aptos2019", "FUNDUS", "retina", "train_images/*.png + train.csv (id_code,diagnosis)",
         ["train_images/*.png", "train.csv"], "Kaggle competition rules (research)",
         "https://www.kaggle.com/c/aptos2019-blindness-detection", "APTOS2019_fundus", layout="flat",
         labels="train.csv", labels_file_column="id_code", labels_label_column="diagnosis"),
    _img("isic2019", "DERM", "skin", "ISIC_2019_Training_Input/*.jpg (+ labels CSV file,label)",
         ["ISIC_2019_Training_Input/*.jpg"], "CC BY-NC 4.0", "https://challenge.isic-archive.com/data/",
         "ISIC2019_dermoscopy", layout="flat",
         notes="the official ground truth is one-hot; convert it to file,label (argmax column) for labels"),
    # --- pathology, cells, microscopy ---
    _img("patchcamelyon", "PATH", "lymph node", "PNG export of camelyonpatch_level_2_split_*.h5 as <label>/*.png",
         ["**/*.png"], "CC0", "https://github.com/basveeling/pcam", "PatchCamelyon_pathology", layout="classes",
         notes="the release is HDF5; export patches to PNG class folders first (h5py)"),
    _img("osteosarcoma_ut", "PATH", "bone", "<set>/*.jpg (+ ML_Features CSV labels)", ["**/*.jpg"],
         "TCIA CC BY 3.0", _NIH + "osteosarcoma-tumor-assessment/", "Osteosarcoma-UT_pathology", layout="flat"),
    _img("aml_cytomorphology", "PATH", "blood", "AML-Cytomorphology_LMU/<class>/*.tiff", ["**/*.tiff"],
         "TCIA CC BY 3.0", _NIH + "aml-cytomorphology_lmu/", "AML-Cytomorphology_cells", layout="classes"),
    _img("bccd", "PATH", "blood", "BCCD/JPEGImages/*.jpg (+ VOC XML boxes, not converted)", ["**/JPEGImages/*.jpg"],
         "MIT", "https://github.com/Shenggan/BCCD_Dataset", "BCCD_blood-cells", layout="flat"),
    _img("bcss", "PATH", "breast", "images/*.png + masks/*.png", ["images/*.png", "masks/*.png"], "CC0",
         "https://github.com/PathologyDataScience/BCSS", "BCSS_pathology", layout="pairs", patient_from="stem"),
    _img("c_nmc", "PATH", "blood (leukemia)", "C-NMC_training_data/fold_<k>/{all,hem}/*.bmp", ["**/*.bmp"],
         "TCIA CC BY 3.0", _NIH + "c-nmc-2019/", "C-NMC_leukemia", layout="classes"),
    _img("malaria_lhncbc", "PATH", "blood (malaria)", "cell_images/{Parasitized,Uninfected}/*.png",
         ["cell_images/*/*.png"], "public domain (NLM)", "https://lhncbc.nlm.nih.gov/LHC-research/LHC-projects/image-processing/malaria-datasheet.html",
         "LHNCBC_malaria", layout="classes", image_glob="cell_images/*/*.png"),
    _img("mll_bone_marrow", "PATH", "bone marrow", "<class>/*.jpg", ["**/*.jpg"], "TCIA CC BY 4.0",
         _NIH + "bone-marrow-cytomorphology_mll_helmholtz_fraunhofer/", "MLL_bone-marrow", layout="classes"),
    _img("nucls", "PATH", "breast (nuclei)", "images/*.png + masks/*.png (rgb/ and mask/ renamed)",
         ["images/*.png", "masks/*.png"], "CC0", "https://sites.google.com/view/nucls", "NuCLS_nucleus",
         layout="pairs"),
    _img("mitoem", "OT", "brain (EM)", "im/*.png slices (+ mito/ masks)", ["**/*.png"], "CC BY-NC 4.0",
         "https://mitoem.grand-challenge.org/", "MitoEM_SEM", layout="flat", patient_from="parent",
         exclude_glob="*mito*"),
    # --- same families, not in LVM-Med's 49 released folders ---
    _tcia("lidc_idri", "CT", "lung", None, _NIH + "lidc-idri/", **_CT),
    _img("chestxray14", "DX", "chest", "images_*/images/*.png + Data_Entry_2017.csv", ["**/*.png"], "CC0 (NIH)",
         "https://nihcc.app.box.com/v/ChestXray-NIHCC", None, layout="flat", labels="Data_Entry_2017.csv",
         labels_file_column="Image Index", labels_label_column="Finding Labels", patient_from="stem"),
    _img("montgomery", "CR", "chest", "CXR_png/MCUCXR_<nnnn>_<0|1>.png", ["**/MCUCXR_*.png"], "public domain (NLM)",
         "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html", None, layout="flat"),
    _img("busi", "US", "breast", "Dataset_BUSI_with_GT/{benign,malignant,normal}/*.png", ["**/benign/*.png"],
         "CC0", "https://scholar.cu.edu.eg/?q=afahmy/pages/dataset", None, layout="classes", exclude_glob="*_mask*"),
    _nii("camus", "US", "heart", "patient<nnnn>/patient<nnnn>_<view>_<phase>.nii.gz + ..._gt.nii.gz",
         ["**/patient*_gt.nii.gz"], "research use (CAMUS terms)", "https://www.creatis.insa-lyon.fr/Challenge/camus/",
         None, exclude_glob="*_gt.nii.gz", label_pattern="{stem}_gt.nii.gz", patient_from="parent"),
    _nii("acdc", "MR", "heart", "patient<nnn>/patient<nnn>_frame<nn>.nii.gz + _gt.nii.gz",
         ["**/patient*_frame*_gt.nii.gz"], "research use (ACDC terms)", "https://www.creatis.insa-lyon.fr/Challenge/acdc/",
         None, image_glob="*_frame??.nii.gz", label_pattern="{stem}_gt.nii.gz", patient_from="parent",
         mask_labels=["background", "rv", "myo", "lv"]),
    _img("cvc_clinicdb", "ES", "colon (polyp)", "images/*.png + masks/*.png (Original/ and Ground Truth/ renamed)",
         ["images/*", "masks/*"], "research use (cite Bernal et al. 2015)", "https://polyp.grand-challenge.org/CVCClinicDB/",
         None, layout="pairs"),
    _img("idrid", "FUNDUS", "retina", "B. Disease Grading/1. Original Images/a. Training Set/*.jpg + labels CSV",
         ["**/*.jpg"], "CC BY 4.0", "https://idrid.grand-challenge.org/", None, layout="flat"),
    _img("fgadr", "FUNDUS", "retina", "Seg-set/Original_Images/*.png + DR_Seg_Grading_Label.csv", ["**/*.png"],
         "research use (FGADR terms)", "https://csyizhou.github.io/FGADR/", None, layout="flat"),
    _img("brain_tumor_mri", "MR", "brain", "{Training,Testing}/{glioma,meningioma,notumor,pituitary}/*.jpg",
         ["**/glioma/*.jpg"], "CC0 (Kaggle)", "https://www.kaggle.com/datasets/masoudnickparvar/brain-tumor-mri-dataset",
         None, layout="classes"),
]  # fmt: skip

CATALOG: dict[str, CatalogEntry] = {e.name: e for e in ENTRIES}


def get_entry(name: str) -> CatalogEntry:
    """Looks an entry up by name (case-insensitive, ``-`` = ``_``); unknown names list close matches."""
    key = name.lower().replace("-", "_")
    if key not in CATALOG:
        import difflib

        close = difflib.get_close_matches(key, CATALOG, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise LayoutError(f"'{name}' is not in the catalog.{hint} `python -m data_prep list` shows all entries.")
    return CATALOG[key]


def check_layout(entry: CatalogEntry, src: Path) -> None:
    """Raises :class:`LayoutError` unless every expected glob matches a file under ``src``."""
    src = Path(src)
    if not src.is_dir():
        raise LayoutError(f"{entry.name} expects a folder with layout: {entry.layout}; --src {src} is not a folder")
    missing = [pattern for pattern in entry.expected if next(src.glob(pattern), None) is None]
    if missing:
        top = sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir())[:12]
        raise LayoutError(
            f"{src} does not look like {entry.name} ({entry.modality}, {entry.organ}).\n"
            f"  expected layout: {entry.layout}\n  missing: no file matches {', '.join(missing)}\n"
            f"  found at the top level: {', '.join(top) or '(empty folder)'}"
            + (f"\n  note: {entry.notes}" if entry.notes else "")
        )


def print_catalog(verbose: bool = False, modality: str | None = None) -> None:
    """Prints the catalog as a table (``verbose``: layout, converter parameters, licence, homepage)."""
    rows = [e for e in ENTRIES if modality is None or e.modality.upper() == modality.upper()]
    print(f"{'name':20s} {'modality':8s} {'organ':22s} {'format':7s} LVM-Med folder")
    for e in rows:
        print(f"{e.name:20s} {e.modality:8s} {e.organ[:22]:22s} {e.format:7s} {e.lvmmed_folder or '(added)'}")
        if verbose:
            print(f"    layout:   {e.layout}\n    convert:  {e.config}")
            print(f"    licence:  {e.licence}\n    homepage: {e.homepage}")
            if e.notes:
                print(f"    notes:    {e.notes}")
    n_lvm = sum(1 for e in rows if e.lvmmed_folder)
    print(f"{len(rows)} entries ({n_lvm} LVM-Med folders, {len(rows) - n_lvm} added from the same families)")
