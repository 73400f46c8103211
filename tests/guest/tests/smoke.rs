//! First checks in the real-kernel lane: the VFIO and iommufd device nodes,
//! the container's API version and type1v2 support, and the `edu` device in
//! its IOMMU group. Run by `bash tests/vm/lane.sh`; ignored on the host.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use vfio_bindings::bindings::vfio::{VFIO_TYPE1v2_IOMMU, VFIO_API_VERSION};
use vfio_hal_guest_tests::{self as lane, sys, KernelFlavour};

const EDU_VENDOR: &str = "0x1234";
const EDU_DEVICE: &str = "0x11e8";

fn read_attr(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The last path component of a sysfs symlink (a driver or group name).
fn link_name(link: &Path) -> String {
    let target = fs::read_link(link).unwrap_or_else(|e| panic!("readlink {}: {e}", link.display()));
    target
        .file_name()
        .unwrap_or_else(|| panic!("{} -> {} has no name", link.display(), target.display()))
        .to_string_lossy()
        .into_owned()
}

fn edu_bdf() -> String {
    lane::lane_env(lane::EDU_BDF)
}

fn edu_group() -> String {
    link_name(&lane::pci_device_dir(&edu_bdf()).join("iommu_group"))
}

fn assert_char_device(path: &Path, what: &str) {
    let meta = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{what}: {} does not exist ({e})", path.display()));
    assert!(
        meta.file_type().is_char_device(),
        "{what}: {} exists but is not a character device",
        path.display()
    );
}

fn open_rw(path: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {path}: {e}"))
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn container_node_exists() {
    assert_char_device(Path::new("/dev/vfio/vfio"), "the VFIO container node");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn group_node_of_edu_exists() {
    let group = edu_group();
    assert_char_device(
        &Path::new("/dev/vfio").join(&group),
        &format!("the VFIO group node of edu (iommu group {group})"),
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn device_cdev_of_edu_exists() {
    let dir = lane::pci_device_dir(&edu_bdf()).join("vfio-dev");
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: no vfio-dev directory, is VFIO_DEVICE_CDEV on? ({e})",
                dir.display()
            )
        })
        .map(|entry| {
            entry
                .expect("reading vfio-dev")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        names.len(),
        1,
        "edu should have exactly one vfio cdev, found {names:?}"
    );
    assert!(
        names[0].starts_with("vfio"),
        "unexpected cdev name {:?}",
        names[0]
    );
    assert_char_device(
        &Path::new("/dev/vfio/devices").join(&names[0]),
        "the VFIO device cdev of edu",
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn iommufd_node_exists_and_opens() {
    assert_char_device(Path::new("/dev/iommu"), "the iommufd node");
    drop(open_rw("/dev/iommu"));
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn container_reports_the_vfio_api_version() {
    let container = open_rw("/dev/vfio/vfio");
    let version =
        sys::vfio_get_api_version(container.as_fd()).expect("VFIO_GET_API_VERSION failed");
    assert_eq!(
        version, VFIO_API_VERSION as i32,
        "VFIO_GET_API_VERSION returned {version}, expected VFIO_API_VERSION"
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn container_supports_type1v2() {
    let container = open_rw("/dev/vfio/vfio");
    let supported = sys::vfio_check_extension(container.as_fd(), VFIO_TYPE1v2_IOMMU)
        .expect("VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) failed");
    assert!(
        supported > 0,
        "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) returned {supported}: no type1v2 on the {:?} kernel",
        lane::kernel_flavour()
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn edu_is_found_by_vendor_and_device_in_its_iommu_group() {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for group in fs::read_dir("/sys/kernel/iommu_groups").expect("no /sys/kernel/iommu_groups") {
        let group = group.expect("reading iommu_groups");
        for dev in fs::read_dir(group.path().join("devices")).expect("reading a group's devices") {
            let dev = dev.expect("reading a group's devices").path();
            // Mediated devices (the mtty instances) share the groups
            // directory; they have no PCI ids (mtty's `vendor` is a
            // directory of sample attributes).
            if !dev.join("vendor").is_file() {
                continue;
            }
            if read_attr(&dev.join("vendor")) == EDU_VENDOR
                && read_attr(&dev.join("device")) == EDU_DEVICE
            {
                found.push((group.file_name().to_string_lossy().into_owned(), dev));
            }
        }
    }
    let bdf = edu_bdf();
    let (group, dev) = found
        .iter()
        .find(|(_, dev)| dev.file_name().is_some_and(|n| n == bdf.as_str()))
        .unwrap_or_else(|| {
            panic!("edu {bdf} not under any /sys/kernel/iommu_groups/*/devices (found {found:?})")
        });
    assert_eq!(
        *group,
        edu_group(),
        "edu listed under group {group}, but its iommu_group link differs"
    );
    assert_eq!(
        link_name(&dev.join("driver")),
        "vfio-pci",
        "edu {bdf} is not bound to vfio-pci"
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn msix_device_is_bound_to_vfio_pci() {
    let bdf = lane::lane_env(lane::MSIX_BDF);
    assert_eq!(
        link_name(&lane::pci_device_dir(&bdf).join("driver")),
        "vfio-pci",
        "the MSI-X device {bdf} is not bound to vfio-pci"
    );
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn kernel_flavour_is_the_one_booted() {
    // vfio_iommu_type1 has module parameters, so a built-in one shows up in
    // /sys/module; the compat kernel has no type1 at all.
    let type1 = Path::new("/sys/module/vfio_iommu_type1").exists();
    match lane::kernel_flavour() {
        KernelFlavour::Default => assert!(type1, "default kernel without vfio_iommu_type1"),
        KernelFlavour::Compat => assert!(!type1, "compat kernel still has vfio_iommu_type1"),
    }
}

/// Compiled only for `bash tests/vm/lane.sh --fail-demo` (see build.rs): shows
/// that a failing guest test fails the lane.
#[cfg(vfio_hal_fail_demo)]
#[test]
fn deliberately_failing_test_for_fail_demo() {
    panic!("deliberate failure (lane.sh --fail-demo): the lane must report it and exit nonzero");
}
