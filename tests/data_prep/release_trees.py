"""One small tree per catalog entry, copying the release's real names, with real pixels from packaged images.

Each :class:`Tree` lists files as ``{relative path: payload kind}`` (names from the release page or LVM-Med's
``file_list.txt``, as the entry cites), side files with their real headers, and what a conversion must give:
sample count, masks, class counts, patients, official split counts and failures. Payloads come from
:mod:`lvmmed.data.samples` (pydicom CT, MNI152 T1 with its GM/WM tissue map, scikit-image fundus and histology),
cropped to a few pixels so 59 conversions stay fast. Nothing is committed: :func:`build_tree` writes at test time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.data_prep.release_payloads import write_payload


@dataclass
class Tree:
    """A release tree and what converting it must give.

    Attributes:
        files: ``{relative path: kind}``; kinds: ``grey``, ``rgb`` (PNG/JPEG/TIFF/BMP by suffix), ``mask``
            (0/255 PNG), ``mask3`` (RGB mask, class in channel 0), ``vol``/``seg`` (NIfTI, Analyze or MetaImage
            volume / label map by suffix), ``vol2d``/``seg2d`` (single frame), ``dcm:<PatientID>``, ``h5x``/``h5y``
            (PatchCamelyon stacks), ``segwhs`` (label map in MM-WHS codes), ``text`` (side file).
        texts: ``{relative path: content}`` for CSV/TXT side files.
        samples: Samples written.
        masks: Every sample carries a mask.
        classes: ``{label_name: samples}`` (multi-label: samples with that class set), or None.
        patients: Distinct patients among the samples.
        official: ``{official split: samples}``, or None.
        failures: ``{kind: count}`` expected in failures.json (errors and missing masks).
    """

    files: dict[str, str]
    texts: dict[str, str] = field(default_factory=dict)
    samples: int = 0
    masks: bool = False
    classes: dict[str, int] | None = None
    patients: int = 0
    official: dict[str, int] | None = None
    failures: dict[str, int] = field(default_factory=dict)


def build_tree(root: Path, tree: Tree) -> Path:
    """Writes ``tree`` under ``root`` and returns ``root``."""
    for i, (rel, kind) in enumerate(sorted(tree.files.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_payload(path, kind, i)
    for rel, text in tree.texts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


# ---- the table ------------------------------------------------------------------------------------------------


def _tcia(paths: list[tuple[str, str]], side: dict[str, str] | None = None) -> Tree:
    """TCIA trees ``<PatientID>/<date-study>/<series>/<n>.dcm``: one series per file (``(path, patient)``)."""
    files = {p: f"dcm:{pid}" for p, pid in paths}
    return Tree(files, side or {"metadata.csv": "Series UID,Collection,Subject ID\n"}, samples=len(paths),
                patients=len({pid for _, pid in paths}))  # fmt: skip


def _study(pid: str, study: str, series: str, n: str = "1-1.dcm") -> tuple[str, str]:
    return (f"{pid}/{study}/{series}/{n}", pid)


_MAC = "._"  # macOS AppleDouble prefix (never an image)

# fmt: off
TREES: dict[str, Tree] = {
    # --- TCIA DICOM (LVM-Med file lists show <PatientID>/<date-study>/<series>/<n>.dcm) ---
    "opc_radiomics": _tcia([_study("OPC-00543", "12-15-2003-Head and Neck RT Planning CT-99125", "2.000000-08148"),
                            _study("OPC-00543", "12-15-2003-Head and Neck RT Planning CT-99125", "1.000000-14014"),
                            _study("OPC-00001", "01-02-2004-RT Planning-1234", "2.000000-11111")]),
    "pancreas_ct": _tcia([_study("PANCREAS_0015", "11-24-2015-PANCREAS_0015-Pancreas-30570", "Pancreas-22230"),
                          _study("PANCREAS_0001", "11-24-2015-PANCREAS_0001-Pancreas-18957", "Pancreas-99667")],
                         {"TCIA_pancreas_labels-02-05-2017/README.txt": "labels\n"}),
    "pelvic_reference": _tcia([_study("Pelvic-Ref-047", "05-06-2011-PELVIS FULL-10365", "65886.000000-NewSimCT-95824"),
                               _study("Pelvic-Ref-001", "05-06-2011-PELVIS FULL-10000", "1.000000-NewSimCT-1")]),
    "tcga_coad": _tcia([_study("TCGA-CK-6747", "11-23-1999-CT ABDOMEN W CO-54581",
    "3.000000-ABD-PEL  3.0  coronal-32179"),
                        _study("TCGA-AA-3495", "01-01-2000-CT-1", "2.000000-AXIAL-1")]),
    "tcga_esca": _tcia([_study("TCGA-VR-A8ER", "07-16-2003-Abdomen^DUO_TX_AS_VOL (Adult)-94802",
    "2.000000-AXIAL S-C-05756"),
                        _study("TCGA-2H-A9GF", "01-01-2001-CT-2", "3.000000-AXIAL-2")]),
    "tcga_thca": _tcia([_study("TCGA-DE-A4MD", "09-26-2004-Outside Read or Comparison NEURO CT-86323",
                               "2.000000-Soft Tissue Neck-62578"), _study("TCGA-BJ-A0Z0", "01-01-2002-CT-3",
                               "2.000000-Neck-3")]),
    "prostatex": _tcia([_study("ProstateX-0115", "01-18-2012-MR prostaat kanker detectie WDS_mc MCAPRODETW-46971",
                               "8.000000-ep2d_diff_tra_DYNDIST_MIXCALC_BVAL-29918", "1-09.dcm"),
                        _study("ProstateX-0000", "07-07-2011-MR prostaat-07875", "4.000000-t2tsesag-87368",
                        "1-01.dcm")]),
    "tcga_cesc": _tcia([_study("TCGA-VS-A954", "04-04-2004-RESSONANCIA MAGNETICA DE PELVE-48916",
    "201.000000-SURVEY-01622"),
                        _study("TCGA-EA-A410", "01-01-2003-MR-4", "3.000000-T2-4")]),
    "hnscc": _tcia([_study("HNSCC-01-0001", "12-05-1998-RT SIMULATION-43582", "10.000000-86297"),
                    _study("HNSCC-01-0002", "01-01-1999-RT SIMULATION-1", "2.000000-1")]),
    "tcga_kich": _tcia([_study("TCGA-KM-8438", "10-31-1991-ABD-18456", "4.000000-POST ABDOMEN-96072", "02-03.dcm"),
                        _study("TCGA-KL-8323", "01-01-1992-ABD-1", "2.000000-ABD-1", "01-01.dcm")]),
    "tcga_kirc": _tcia([_study("TCGA-B0-5077", "07-08-1987-ABD-PELVIS W-W-O-61951", "1.000000-22409"),
                        _study("TCGA-B0-5077", "07-08-1987-ABD-PELVIS W-W-O-61951", "3.000000-38659", "1-009.dcm")]),
    "tcga_read": _tcia([_study("TCGA-CL-4957", "08-24-1997-CT ABDOMEN W CO-74402", "2.000000-ABD-PEL  5.0  B30f-85771"),
                        _study("TCGA-AG-3725", "01-01-1998-CT-5", "2.000000-ABD-5")]),
    "tcga_sarc": _tcia([_study("TCGA-QQ-A8VH", "03-15-2002-MRI THORACIC W-WO CONTRAST-84485",
                               "8.000000-Axfspgr +c T-SPINE-72635", "1-09.dcm")]),
    "cbis_ddsm": _tcia([_study("CBIS-DDSM/Calc-Test_P_00038_LEFT_CC", "08-29-2017-DDSM-96009",
                               "1.000000-full mammogram images-63992"),
                        _study("CBIS-DDSM/Mass-Training_P_00001_LEFT_CC", "07-20-2016-DDSM-74994",
                               "1.000000-full mammogram images-24515")],
                       {"calc_case_description_test_set.csv": "patient_id,breast density\n"}),
    "lidc_idri": _tcia([_study("LIDC-IDRI/LIDC-IDRI-0001", "01-01-2000-30178", "3000566.000000-03192", "1-001.dcm"),
                        _study("LIDC-IDRI/LIDC-IDRI-0002", "01-01-2000-98329", "3000522.000000-04919", "1-001.dcm")],
                       {"LIDC-IDRI/LIDC-IDRI-0001/01-01-2000-30178/3000566.000000-03192/069.xml":
                        "<LidcReadMessage/>"}),
    "vinbigdata": Tree({"train/9a5094b2563a1ef3ff50dc5c7ff71345.dicom": "dcm:v1",
                        "train/051132a778e61a86eb147c7c6f564dfe.dicom": "dcm:v2",
                        "test/002a34c58c5b758217ed1f584ccbcfe9.dicom": "dcm:v3"},
                       {"train.csv": "image_id,class_name,class_id,rad_id,x_min,y_min,x_max,y_max\n",
                        "sample_submission.csv": "image_id,PredictionString\n"}, samples=3, patients=3),
    # --- NIfTI / Analyze / MetaImage volumes ---
    "lits2017": Tree({"Training Batch 1/volume-0.nii": "vol", "Training Batch 1/segmentation-0.nii": "seg",
                      "Training Batch 1/volume-1.nii": "vol", "Training Batch 1/segmentation-1.nii": "seg",
                      "Training Batch 2/volume-28.nii": "vol", "Training Batch 2/segmentation-28.nii": "seg",
                      "Test-Data/test-volume-0.nii": "vol"}, samples=3, masks=True, patients=3),
    "luna16": Tree({"subset0/1.3.6.1.4.1.14519.5.2.1.6279.6001.100530488926682752765845212286.mhd": "vol",
                    "subset1/1.3.6.1.4.1.14519.5.2.1.6279.6001.100620385482151095585000946543.mhd": "vol"},
                   {"annotations.csv": "seriesuid,coordX,coordY,coordZ,diameter_mm\n"}, samples=2, patients=2),
    "kits19": Tree({"data/case_00000/imaging.nii.gz": "vol", "data/case_00000/segmentation.nii.gz": "seg",
                    "data/case_00154/imaging.nii.gz": "vol", "data/case_00154/segmentation.nii.gz": "seg",
                    "data/case_00210/imaging.nii.gz": "vol"}, {"data/kits.json": "[]"}, samples=3, patients=3),
    "mmwhs_ct": Tree({"ct_train/ct_train_1001_image.nii.gz": "vol", "ct_train/ct_train_1001_label.nii.gz": "segwhs",
                      "ct_train/ct_train_1002_image.nii.gz": "vol", "ct_train/ct_train_1002_label.nii.gz": "segwhs",
                      "ct_test/ct_test_2001_image.nii.gz": "vol"}, samples=3, patients=3,
                     official={"train": 2, "test": 1}),
    "mmwhs_mr": Tree({"mr_train/mr_train_1014_image.nii": "vol", "mr_train/mr_train_1014_label.nii": "segwhs",
                      "mr_train/mr_train_1020_image.nii": "vol", "mr_train/mr_train_1020_label.nii": "segwhs"},
                     samples=2, masks=True, patients=2, official={"train": 2}),
    "msd": Tree({"Task09_Spleen/imagesTr/spleen_10.nii.gz": "vol", "Task09_Spleen/labelsTr/spleen_10.nii.gz": "seg",
                 "Task09_Spleen/imagesTr/spleen_12.nii.gz": "vol", "Task09_Spleen/labelsTr/spleen_12.nii.gz": "seg",
                 f"Task09_Spleen/imagesTr/{_MAC}spleen_10.nii.gz": "text",
                 "Task09_Spleen/imagesTs/spleen_1.nii.gz": "vol"},
                {"Task09_Spleen/dataset.json": "{}"}, samples=3, patients=3, official={"train": 2, "test": 1}),
    "brats2018": Tree({f"MICCAI_BraTS_2018_Data_Training/{g}/{c}/{c}_{s}.nii.gz": ("seg" if s == "seg" else "vol")
                       for g, c in (("HGG", "Brats18_CBICA_ANZ_1"), ("HGG", "Brats18_TCIA01_235_1"),
                                    ("LGG", "Brats18_TCIA10_103_1"))
                       for s in ("t1", "t1ce", "t2", "flair", "seg")},
                      {"MICCAI_BraTS_2018_Data_Training/survival_data.csv": "BraTS18ID,Age,Survival,ResectionStatus\n"},
                      samples=12, masks=True, classes={"HGG": 8, "LGG": 4}, patients=3),
    "adni_15t": Tree({"ADNI/002_S_0295/MPR__GradWarp__B1_Correction__N3__Scaled/2006-04-18_08_20_30.0/S13408/"
                      "ADNI_002_S_0295_MR_MPR__GradWarp__B1_Correction__N3__Scaled_Br_20070319113623975_S13408_"
                      "I45108.nii": "vol",
                      "ADNI/002_S_0295/MPR__GradWarp__B1_Correction__N3__Scaled/2006-11-02_08_16_44.0/S21856/"
                      "ADNI_002_S_0295_MR_MPR__GradWarp__B1_Correction__N3__Scaled_Br_20070319114336780_S21856_"
                      "I45112.nii": "vol",
                      "ADNI/011_S_0002/MPR__GradWarp__B1_Correction__N3__Scaled/2006-03-01_10_25_00.0/S10843/"
                      "ADNI_011_S_0002_MR_MPR__GradWarp__B1_Correction__N3__Scaled_Br_20070108225050541_S10843_"
                      "I35475.nii": "vol"},
                     samples=3, patients=2),
    "adni_3t": Tree({"ADNI/005_S_0610/MPR__GradWarp__B1_Correction__N3/2006-06-29_13_44_44.0/S16233/"
                     "ADNI_005_S_0610_MR_MPR__GradWarp__B1_Correction__N3_Br_20070411115623342_S16233_"
                     "I48608.nii": "vol",
                     "ADNI/941_S_1194/MPR__GradWarp__B1_Correction__N3/2007-01-25_12_42_08.0/S25634/"
                     "ADNI_941_S_1194_MR_MPR__GradWarp__B1_Correction__N3_Br_20070808133315425_S25634_"
                     "I65418.nii": "vol"},
                    samples=2, patients=2),
    "hippseg2011": Tree({"HFH_005.hdr": "vol", "HFH_008.hdr": "vol"}, samples=2, patients=2),
    "camus": Tree({f"database_nifti/{p}/{p}_{v}{gt}.nii.gz": ("seg2d" if gt else "vol2d")
                   for p in ("patient0001", "patient0002") for v in ("2CH_ED", "4CH_ES") for gt in ("", "_gt")}
                  | {"database_nifti/patient0001/patient0001_2CH_half_sequence.nii.gz": "vol",
                     "database_nifti/patient0001/patient0001_2CH_half_sequence_gt.nii.gz": "seg"},
                  {"database_nifti/patient0001/Info_2CH.cfg": "ED: 1\nES: 13\n"}, samples=4, masks=True, patients=2),
    "acdc": Tree({f"database/{s}/{p}/{p}_{f}.nii.gz": k for s, p in (("training", "patient001"), ("testing",
    "patient101"))
                  for f, k in (("frame01", "vol"), ("frame01_gt", "seg"), ("frame12", "vol"), ("frame12_gt", "seg"),
                               ("4d", "vol"))},
                 {"database/training/patient001/Info.cfg": "ED: 1\nES: 12\nGroup: DCM\n",
                  "database/MANDATORY_CITATION.md": "cite\n"},
                 samples=4, masks=True, patients=2, official={"train": 2, "test": 2}),
    # --- 2-D releases ---
    "covidx_ct": Tree({"2A_images/NCP_96_1328_0032.png": "grey", "2A_images/NCP_96_1328_0035.png": "grey",
                       "2A_images/CP_1_3128_0000.png": "grey", "2A_images/Normal_1_1000_0001.png": "grey",
                       "2A_images/radiopaedia_10_85902_0_case10_0001.png": "grey"},
                      {"train_COVIDx_CT-2A.txt": "NCP_96_1328_0032.png 2 9 94 512 405\nCP_1_3128_0000.png 1 0 0 1 1\n",
                       "val_COVIDx_CT-2A.txt": "NCP_96_1328_0035.png 2 9 94 512 405\n",
                       "test_COVIDx_CT-2A.txt": "Normal_1_1000_0001.png 0 0 0 1 1\n"},
                      samples=4, classes={"COVID-19": 2, "pneumonia": 1, "normal": 1}, patients=3,
                      official={"train": 2, "val": 1, "test": 1}),
    "shenzhen": Tree({"ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png": "grey",
    "ChinaSet_AllFiles/CXR_png/CHNCXR_0002_0.png": "grey",
                      "ChinaSet_AllFiles/CXR_png/CHNCXR_0327_1.png": "grey",
                      "ChinaSet_AllFiles/CXR_png/Thumbs.db": "text",
                      "ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt": "text"},
                     {"ChinaSet_AllFiles/NLM-ChinaCXRSet-ReadMe.docx": "readme"},
                     samples=3, classes={"normal": 2, "tuberculosis": 1}, patients=3),
    "montgomery": Tree({"MontgomerySet/CXR_png/MCUCXR_0001_0.png": "grey",
    "MontgomerySet/CXR_png/MCUCXR_0002_0.png": "grey",
                        "MontgomerySet/CXR_png/MCUCXR_0104_1.png": "grey",
                        **{f"MontgomerySet/ManualMask/{side}/MCUCXR_{n}.png": "mask"
                           for side in ("leftMask", "rightMask") for n in ("0001_0", "0002_0", "0104_1")},
                        "MontgomerySet/ClinicalReadings/MCUCXR_0001_0.txt": "text"},
                       {"MontgomerySet/NLM-MontgomeryCXRSet-ReadMe.pdf": "readme"},
                       samples=3, masks=True, classes={"normal": 2, "tuberculosis": 1}, patients=3),
    "rsna_bone_age": Tree({"boneage-training-dataset/boneage-training-dataset/1377.png": "grey",
                           "boneage-training-dataset/boneage-training-dataset/1378.png": "grey",
                           "boneage-training-dataset/boneage-training-dataset/1379.png": "grey"},
                          {"boneage-training-dataset.csv": "id,boneage,male\n1377,180,False\n1378,12,False\n1379,94,"
                                                           "True\n"},
                          samples=3, classes={"female": 2, "male": 1}, patients=3),
    "dental_panoramic": Tree({"Images/1.png": "grey", "Images/2.png": "grey", "Segmentation1/1.png": "mask",
                              "Segmentation1/2.png": "mask", "Segmentation2/1.png": "mask"},
                             samples=2, masks=True, patients=2),
    "shoulder_xray": Tree({"MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image1.png": "grey",
                           "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_positive/image2.png": "grey",
                           "MURA-v1.1/train/XR_SHOULDER/patient00002/study1_negative/image1.png": "grey",
                           "MURA-v1.1/valid/XR_SHOULDER/patient11187/study1_positive/image1.png": "grey",
                           "MURA-v1.1/train/XR_ELBOW/patient00011/study1_negative/image1.png": "grey"},
                          {"MURA-v1.1/train_labeled_studies.csv": "MURA-v1.1/train/XR_SHOULDER/patient00001/study1_"
                                                                  "positive/,1\n"},
                          samples=4, classes={"positive": 3, "negative": 1}, patients=3, official={"train": 3,
                                              "val": 1}),
    "hc18": Tree({"training_set/000_HC.png": "grey", "training_set/000_HC_Annotation.png": "mask",
                  "training_set/010_HC.png": "grey", "training_set/010_2HC.png": "grey", "test_set/000_HC.png": "grey"},
                 {"training_set_pixel_size_and_HC.csv": "filename,pixel size(mm),head circumference (mm)\n"},
                 samples=4, patients=3, official={"train": 3, "test": 1}),
    "oct2017": Tree({"OCT2017/train/CNV/CNV-1016042-1.jpeg": "grey", "OCT2017/train/CNV/CNV-1016042-2.jpeg": "grey",
                     "OCT2017/train/DME/DME-1072015-1.jpeg": "grey",
                     "OCT2017/train/DRUSEN/DRUSEN-1083159-1.jpeg": "grey",
                     "OCT2017/train/NORMAL/NORMAL-1001666-1.jpeg": "grey", "OCT2017/test/CNV/CNV-53018-1.jpeg": "grey",
                     "OCT2017/test/NORMAL/NORMAL-4872585-1.jpeg": "grey",
                     f"OCT2017/train/CNV/{_MAC}CNV-1016042-1.jpeg": "text"},
                    samples=7, classes={"CNV": 3, "DME": 1, "DRUSEN": 1, "NORMAL": 2}, patients=6,
                    official={"train": 5, "test": 2}),
    "hyperkvasir": Tree({"labeled-images/lower-gi-tract/pathological-findings/polyps/0a0e0dc3-7a4f-4c8e-b4e1-"
                         "1d4b5a8b3e2f.jpg": "rgb",
                         "labeled-images/upper-gi-tract/anatomical-landmarks/pylorus/00a1b2c3-d4e5-4f60-8a9b-"
                         "0c1d2e3f4a5b.jpg": "rgb",
                         "unlabeled-images/images/00003e63-6ee6-4251-9879-8a27856179db.jpg": "rgb",
                         "segmented-images/images/0a0e0dc3-7a4f-4c8e-b4e1-1d4b5a8b3e2f.jpg": "rgb"},
                        {"labeled-images/image-labels.csv": "Video file,Organ,Finding,Classification\n"},
                        samples=3, classes={"polyps": 1, "pylorus": 1}, patients=3),
    "kvasir": Tree({"kvasir-dataset-v2/esophagitis/0339a2f7-65bb-41fb-8650-e119670b4e2e.jpg": "rgb",
                    "kvasir-dataset-v2/polyps/05e390bf-b7bf-4bc9-919a-ca9abc61803f.jpg": "rgb",
                    "kvasir-dataset-v2/polyps/08fe1ae5-193b-4df3-bd6e-bc99d920537b.jpg": "rgb"},
                   samples=3, classes={"esophagitis": 1, "polyps": 2}, patients=3),
    "saras_mesad": Tree({"train/RARP1/000001.jpg": "rgb", "train/RARP1/000002.jpg": "rgb",
    "train/RARP2/000001.jpg": "rgb",
                         "train/RARP1/obj/000001.txt": "text"}, samples=3, patients=2),
    "m2caiseg": Tree({"m2caiSeg dataset/train/images/015975.jpg": "rgb",
    "m2caiSeg dataset/train/groundtruth/015975.png": "mask",
                      "m2caiSeg dataset/test/images/03425.jpg": "rgb",
                      "m2caiSeg dataset/test/groundtruth/03425.png": "mask",
                      "m2caiSeg dataset/train/images/06625.jpg": "rgb"},
                     samples=2, masks=True, patients=2, official={"train": 1, "test": 1}, failures={"missing_mask": 1}),
    "eyepacs": Tree({"train/10_left.jpeg": "rgb", "train/10_right.jpeg": "rgb", "train/13_left.jpeg": "rgb",
                     "test/1_left.jpeg": "rgb"},
                    {"trainLabels.csv": "image,level\n10_left,0\n10_right,0\n13_left,2\n"},
                    samples=4, classes={"0": 2, "2": 1}, patients=3, official={"train": 3, "test": 1}),
    "aptos2019": Tree({"train_images/000c1434d8d7.png": "rgb", "train_images/001639a390f0.png": "rgb",
                       "test_images/0005cfc8afb6.png": "rgb"},
                      {"train.csv": "id_code,diagnosis\n000c1434d8d7,2\n001639a390f0,4\n",
                       "test.csv": "id_code\n0005cfc8afb6\n"},
                      samples=3, classes={"2": 1, "4": 1}, patients=3, official={"train": 2, "test": 1}),
    "isic2019": Tree({"ISIC_2019_Training_Input/ISIC_0000000.jpg": "rgb",
    "ISIC_2019_Training_Input/ISIC_0000001.jpg": "rgb",
                      "ISIC_2019_Training_Input/ISIC_0000002_downsampled.jpg": "rgb",
                      "ISIC_2019_Training_Input/ATTRIBUTION.txt": "text",
                      "ISIC_2019_Training_Input/LICENSE.txt": "text"},
                     {"ISIC_2019_Training_GroundTruth.csv": "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
                      "ISIC_0000000,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\nISIC_0000001,0.0,1.0,0.0,0.0,0.0,0.0,0.0,"
                      "0.0,0.0\n"
                      "ISIC_0000002_downsampled,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n",
                      "ISIC_2019_Training_Metadata.csv": "image,age_approx,anatom_site_general,lesion_id,sex\n"},
                     samples=3, classes={"MEL": 1, "NV": 2}, patients=3),
    "patchcamelyon": Tree({"camelyonpatch_level_2_split_train_x.h5": "h5x",
    "camelyonpatch_level_2_split_train_y.h5": "h5y",
                           "camelyonpatch_level_2_split_test_x.h5": "h5x",
                           "camelyonpatch_level_2_split_test_y.h5": "h5y"},
                          {"camelyonpatch_level_2_split_train_meta.csv": ",coord_y,coord_x,tumor_patch,center_tumor_"
                                                                         "patch,wsi\n"
                           + "".join(f"{i},0,0,False,False,camelyon16_train_normal_00{i % 2}\n" for i in range(6)),
                           "camelyonpatch_level_2_split_test_meta.csv": ",coord_y,coord_x,tumor_patch,center_tumor_"
                                                                        "patch,wsi\n"
                           + "".join(f"{i},0,0,False,False,camelyon16_test_00{i % 3}\n" for i in range(6))},
                          samples=12, classes={"normal": 6, "tumor": 6}, patients=5, official={"train": 6, "test": 6}),
    "osteosarcoma_ut": Tree({"Training-Set-1/set1/Case-3-A10-17206-19249.jpg": "rgb",
                             "Training-Set-1/set1/Case-3-A10-19799-5772.jpg": "rgb",
                             "Training-Set-2/set5/Case-47-P8-9350-13820.jpg": "rgb"},
                            {"ML_Features_1144.csv": "image.name,x,classification\nCase-3-A10-17206-19249.jpg,1,Non-"
                                                     "Tumor\n"
                             "Case-3-A10-19799-5772.jpg,2,Viable\nCase-47-P8-9350-13820.jpg,3,Non-Tumor\n"},
                            samples=3, classes={"Non-Tumor": 2, "Viable": 1}, patients=2),
    "aml_cytomorphology": Tree({"AML-Cytomorphology_LMU/BAS/BAS_0002.tiff": "rgb",
    "AML-Cytomorphology_LMU/BAS/BAS_0024.tiff": "rgb",
                                "AML-Cytomorphology_LMU/MYO/MYO_0001.tiff": "rgb"},
                               {"AML-Cytomorphology_LMU/annotations.dat": "BAS/BAS_0002.tiff BAS\n"},
                               samples=3, classes={"BAS": 2, "MYO": 1}, patients=3),
    "bccd": Tree({"BCCD_Dataset-master/BCCD/JPEGImages/BloodImage_00001.jpg": "rgb",
                  "BCCD_Dataset-master/BCCD/JPEGImages/BloodImage_00003.jpg": "rgb"},
                 {"BCCD_Dataset-master/BCCD/Annotations/BloodImage_00001.xml": "<annotation/>",
                  "BCCD_Dataset-master/BCCD/ImageSets/Main/train.txt": "BloodImage_00001\n"}, samples=2, patients=2),
    "bcss": Tree({"rgbs_colorNormalized/TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500.png": "rgb",
                  "masks/TCGA-A1-A0SK-DX1_xmin45749_ymin25055_MPP-0.2500.png": "mask",
                  "rgbs_colorNormalized/TCGA-A2-A04P-DX1_xmin104246_ymin48517_MPP-0.2500.png": "rgb",
                  "masks/TCGA-A2-A04P-DX1_xmin104246_ymin48517_MPP-0.2500.png": "mask"},
                 {"gtruth_codes.tsv": "label\tGT_code\noutside_roi\t0\ntumor\t1\n"}, samples=2, masks=True, patients=2),
    "c_nmc": Tree({"C-NMC_training_data/fold_0/all/UID_11_10_1_all.bmp": "rgb",
    "C-NMC_training_data/fold_0/all/UID_11_11_1_all.bmp": "rgb",
                   "C-NMC_training_data/fold_1/hem/UID_H10_43_1_hem.bmp": "rgb"},
                  samples=3, classes={"all": 2, "hem": 1}, patients=2),
    "malaria_lhncbc": Tree({"cell_images/Parasitized/C100P61ThinF_IMG_20150918_144104_cell_162.png": "rgb",
                            "cell_images/Parasitized/C100P61ThinF_IMG_20150918_144348_cell_108.png": "rgb",
                            "cell_images/Uninfected/C1_thinF_IMG_20150604_104722_cell_9.png": "rgb",
                            "cell_images/Uninfected/C2P1ThinF_IMG_20150604_104722_cell_1.png": "rgb",
                            "cell_images/Parasitized/Thumbs.db": "text"},
                           samples=4, classes={"Parasitized": 2, "Uninfected": 2}, patients=3),
    "mll_bone_marrow": Tree({"BM_cytomorphology_data/ABE/0001-1000/ABE_00002.jpg": "rgb",
                             "BM_cytomorphology_data/ART/0001-1000/ART_00002.jpg": "rgb",
                             "BM_cytomorphology_data/ART/0001-1000/ART_00008.jpg": "rgb"},
                            {"abbreviations.csv": "Abbreviation,Meaning\n"},
                            samples=3, classes={"ABE": 1, "ART": 2}, patients=3),
    "nucls": Tree({"rgb/TCGA-A2-A04P-DX1_id-5ea4099addda5f839898164e_left-105249_top-48755_bottom-49046_right-"
                   "105559.png": "rgb",
                   "mask/TCGA-A2-A04P-DX1_id-5ea4099addda5f839898164e_left-105249_top-48755_bottom-49046_right-"
                   "105559.png": "mask3",
                   "rgb/TCGA-AR-A1AR-DX1_id-5ea40a88ddda5f8398990ccf_left-105296_top-48503_bottom-48769_right-"
                   "105698.png": "rgb",
                   "mask/TCGA-AR-A1AR-DX1_id-5ea40a88ddda5f8398990ccf_left-105296_top-48503_bottom-48769_right-"
                   "105698.png": "mask3",
                   "csv/TCGA-A2-A04P-DX1_id-5ea4099addda5f839898164e_left-105249_top-48755_bottom-49046_right-"
                   "105559.csv": "text"},
                  samples=2, masks=True, patients=2),
    "mitoem": Tree({"EM30-R/im/im0400.png": "grey", "EM30-R/im/im0401.png": "grey", "EM30-H/im/im0400.png": "grey",
                    "EM30-R/mito-train-v2/seg0000.tif": "mask"}, samples=3, patients=2),
    "chestxray14": Tree({"images_001/images/00000001_000.png": "grey", "images_001/images/00000001_001.png": "grey",
                         "images_001/images/00000002_000.png": "grey", "images_002/images/00001336_000.png": "grey"},
                        {"Data_Entry_2017_v2020.csv": "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,"
                         "Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
                         "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143\n"
                         "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143\n"
                         "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171\n"
                         "00001336_000.png,Effusion|Mass,0,1336,60,F,AP,2500,2048,0.168,0.168\n",
                         "train_val_list.txt": "00000001_000.png\n00000001_001.png\n00000002_000.png\n",
                         "test_list.txt": "00001336_000.png\n", "BBox_List_2017.csv": "Image Index,Finding Label\n"},
                        samples=4, classes={"Cardiomegaly": 2, "Effusion": 1, "Emphysema": 1, "Mass": 1,
                                            "No Finding": 1},
                        patients=3, official={"train": 3, "test": 1}),
    "busi": Tree({**{f"Dataset_BUSI_with_GT/{c}/{c} ({n}){m}.png": ("mask" if m else "grey")
                     for c in ("benign", "malignant", "normal") for n in (1, 2) for m in ("", "_mask")},
                  "Dataset_BUSI_with_GT/benign/benign (2)_mask_1.png": "mask",
                  "Dataset_BUSI_with_GT/malignant/malignant (3).png": "grey"},
                 samples=6, masks=True, classes={"benign": 2, "malignant": 2, "normal": 2}, patients=6,
                 failures={"missing_mask": 1}),
    "cvc_clinicdb": Tree({"PNG/Original/1.png": "rgb", "PNG/Original/2.png": "rgb", "PNG/Ground Truth/1.png": "mask",
                          "PNG/Ground Truth/2.png": "mask", "TIF/Original/1.tif": "rgb",
                          "TIF/Ground Truth/1.tif": "mask"},
                         samples=2, masks=True, patients=2),
    "idrid": Tree({"B. Disease Grading/1. Original Images/a. Training Set/IDRiD_001.jpg": "rgb",
                   "B. Disease Grading/1. Original Images/a. Training Set/IDRiD_002.jpg": "rgb",
                   "B. Disease Grading/1. Original Images/b. Testing Set/IDRiD_001.jpg": "rgb"},
                  {"B. Disease Grading/2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv":
                   "Image name,Retinopathy grade,Risk of macular edema \nIDRiD_001,3,2\nIDRiD_002,0,0\n"},
                  samples=2, classes={"0": 1, "3": 1}, patients=2),
    "fgadr": Tree({"Seg-set/Original_Images/0001_1.png": "rgb", "Seg-set/Original_Images/0002_2.png": "rgb",
                   "Seg-set/HardExudate_Masks/0001_1.png": "mask"},
                  {"Seg-set/DR_Seg_Grading_Label.csv": "0001_1.png,4\n0002_2.png,1\n"},
                  samples=2, classes={"1": 1, "4": 1}, patients=2),
    "brain_tumor_mri": Tree({"Training/glioma/Tr-gl_0010.jpg": "grey", "Training/notumor/Tr-no_0010.jpg": "grey",
                             "Training/pituitary/Tr-pi_0010.jpg": "grey", "Training/meningioma/Tr-me_0010.jpg": "grey",
                             "Testing/glioma/Te-gl_0010.jpg": "grey", "Testing/notumor/Te-no_0010.jpg": "grey"},
                            samples=6, classes={"glioma": 2, "meningioma": 1, "notumor": 2, "pituitary": 1}, patients=6,
                            official={"train": 4, "test": 2}),
}
# fmt: on
