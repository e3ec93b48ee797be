#!/usr/bin/env python3
"""Packs the native library into the NuGet package FlashDmAttn.runtime.<rid>.<version>.nupkg.

    python3 packaging/pack_runtime.py --rid linux-x64 --library build/native/libflash_dmattn.so --archs "80;90" \\
        --out artifacts/packages

The managed package names this one, per runtime identifier, in its runtime.json. It is written with python3 alone
because the machines that build the native library need not have the .NET SDK: a .nupkg is a zip of a .nuspec, the
packed files, and two parts of the Open Packaging Conventions ([Content_Types].xml and _rels/.rels). The version comes
from native/include/flash_dmattn.h; the metadata and the files every package carries (license, readme) from
packaging/Package.props, which dotnet pack reads for the managed package. Entries are sorted and dated
SOURCE_DATE_EPOCH when it is set (./build.sh pack sets it to the commit's time), so the same inputs give the same bytes.
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile

PACKAGING_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(PACKAGING_DIR)
HEADER = os.path.join(ROOT, "native", "include", "flash_dmattn.h")
PACKAGE_PROPS = os.path.join(PACKAGING_DIR, "Package.props")
PACKAGE_ID = "FlashDmAttn"
NUSPEC_NAMESPACE = "http://schemas.microsoft.com/packaging/2012/06/nuspec.xsd"
ZIP_EPOCH = 315532800  # 1980-01-01, the earliest time a zip entry can hold


def version():
    """major.minor.patch from the header's FDMA_VERSION_* macros: the one place the version is written."""
    with open(HEADER, encoding="utf-8") as header:
        text = header.read()
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        match = re.search(rf"^#define FDMA_VERSION_{part} +(\d+)$", text, re.MULTILINE)
        if match is None:
            sys.exit(f"pack_runtime.py: {HEADER} defines no FDMA_VERSION_{part}")
        parts.append(match.group(1))
    return ".".join(parts)


def package_props():
    """The properties of Package.props, and the files it packs as (path on disk, path in the package)."""
    project = ET.parse(PACKAGE_PROPS).getroot()
    properties = {}
    for element in project.iterfind("PropertyGroup/*"):
        value = (element.text or "").strip()
        if "$(" in value:
            sys.exit(f"pack_runtime.py: {PACKAGE_PROPS}: {element.tag} holds an MSBuild expression this script cannot read")
        properties[element.tag] = value
    files = []
    for item in project.iterfind("ItemGroup/None[@Pack='true']"):
        source = item.get("Include").replace("$(MSBuildThisFileDirectory)", PACKAGING_DIR + os.sep)
        if "$(" in source or item.get("PackagePath") != "/":
            sys.exit(f"pack_runtime.py: {PACKAGE_PROPS}: cannot place {item.get('Include')}")
        files.append((os.path.normpath(source), os.path.basename(source)))
    return properties, files


def git(*args):
    """A git query's answer, or None outside a checkout (the GPU machine gets a copy of the files only)."""
    try:
        result = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=False)
    except OSError:
        return None
    answer = result.stdout.strip()
    return answer if result.returncode == 0 and answer else None


def nuspec(package_id, package_version, rid, archs, properties):
    ET.register_namespace("", NUSPEC_NAMESPACE)
    package = ET.Element(f"{{{NUSPEC_NAMESPACE}}}package")
    metadata = ET.SubElement(package, f"{{{NUSPEC_NAMESPACE}}}metadata")

    def add(tag, text=None, **attributes):
        element = ET.SubElement(metadata, f"{{{NUSPEC_NAMESPACE}}}{tag}", attributes)
        element.text = text

    license_expression = properties["PackageLicenseExpression"]
    add("id", package_id)
    add("version", package_version)
    add("authors", properties["Authors"])
    add("license", license_expression, type="expression")
    add("licenseUrl", f"https://licenses.nuget.org/{license_expression}")  # what dotnet pack adds for older clients
    add("readme", properties["PackageReadmeFile"])
    sm = ", ".join(f"sm_{arch}" for arch in archs)
    add("description",
        f"The native library of {PACKAGE_ID} (libflash_dmattn, C ABI) for {rid}: CUDA kernels compiled for {sm}, "
        f"with the CUDA runtime linked in statically, so it needs only the NVIDIA driver. The package {PACKAGE_ID} "
        f"brings it along on a restore for {rid}; other GPUs use {PACKAGE_ID}'s NVRTC fallback.")
    add("tags", properties["PackageTags"])
    commit = git("rev-parse", "HEAD")
    if commit is not None:
        repository = {"type": "git", "commit": commit}
        url = git("config", "--get", "remote.origin.url")
        if url is not None:
            repository["url"] = url
        add("repository", **repository)
    ET.indent(package)
    return ET.tostring(package, encoding="utf-8", xml_declaration=True)


def content_types(names):
    """[Content_Types].xml: a content type per extension, and per file that has none."""
    types = ET.Element("Types", xmlns="http://schemas.openxmlformats.org/package/2006/content-types")
    ET.SubElement(types, "Default", Extension="rels",
                  ContentType="application/vnd.openxmlformats-package.relationships+xml")
    for extension in sorted({os.path.splitext(n)[1][1:] for n in names} - {"", "rels"}):
        ET.SubElement(types, "Default", Extension=extension, ContentType="application/octet")
    for name in sorted(n for n in names if not os.path.splitext(n)[1]):
        ET.SubElement(types, "Override", PartName=f"/{name}", ContentType="application/octet")
    ET.indent(types)
    return ET.tostring(types, encoding="utf-8", xml_declaration=True)


def relationships(nuspec_name):
    """_rels/.rels: the package's manifest is its .nuspec (the id is the target's hash, so it is stable)."""
    relationships_element = ET.Element("Relationships", xmlns="http://schemas.openxmlformats.org/package/2006/relationships")
    ET.SubElement(relationships_element, "Relationship", Type="http://schemas.microsoft.com/packaging/2010/07/manifest",
                  Target=f"/{nuspec_name}", Id="R" + hashlib.sha256(nuspec_name.encode()).hexdigest()[:16].upper())
    ET.indent(relationships_element)
    return ET.tostring(relationships_element, encoding="utf-8", xml_declaration=True)


def read_bytes(path):
    with open(path, "rb") as packed:
        return packed.read()


def write_package(path, parts):
    """parts: {name in the package: bytes}, written in name order with one timestamp."""
    stamp = max(int(os.environ.get("SOURCE_DATE_EPOCH", time.time())), ZIP_EPOCH)
    date_time = time.gmtime(stamp)[:6]
    temporary = path + ".tmp"
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as package:
        for name in sorted(parts):
            entry = zipfile.ZipInfo(name, date_time)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            package.writestr(entry, parts[name])
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rid", required=True, help="runtime identifier: linux-x64 or win-x64")
    parser.add_argument("--library", required=True, help="the built libflash_dmattn.so (flash_dmattn.dll on Windows)")
    parser.add_argument("--archs", required=True, help="the CUDA architectures it holds code for, as CMake lists them")
    parser.add_argument("--out", required=True, help="folder for the .nupkg")
    arguments = parser.parse_args()

    properties, files = package_props()
    # "80;90-real" -> 80, 90, as native/CMakeLists.txt reads them for fdma_compiled_archs.
    archs = list(dict.fromkeys(re.sub(r"[^0-9].*$", "", arch) for arch in arguments.archs.split(";")))
    if not archs or not all(archs):
        sys.exit(f"pack_runtime.py: --archs {arguments.archs!r} is not a list of CUDA architecture numbers")

    package_id = f"{PACKAGE_ID}.runtime.{arguments.rid}"
    package_version = version()
    nuspec_name = f"{package_id}.nuspec"
    parts = {
        nuspec_name: nuspec(package_id, package_version, arguments.rid, archs, properties),
        f"runtimes/{arguments.rid}/native/{os.path.basename(arguments.library)}": read_bytes(arguments.library),
    }
    for source, name in files:
        parts[name] = read_bytes(source)
    parts["[Content_Types].xml"] = content_types(parts)
    parts["_rels/.rels"] = relationships(nuspec_name)

    os.makedirs(arguments.out, exist_ok=True)
    path = os.path.join(arguments.out, f"{package_id}.{package_version}.nupkg")
    write_package(path, parts)
    print(f"pack_runtime.py: {path}")


if __name__ == "__main__":
    main()
