//! A fake host for tests: a sysfs and `/dev` tree in a temporary directory,
//! public so that downstream crates test their discovery and diagnosis code
//! the way this crate does — every lookup of [`Host`] runs unchanged against
//! it. Nothing here is compiled only for tests.

use std::io;
use std::path::{Path, PathBuf};

use crate::host::Host;

/// A fresh directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/vfio-hal-<tag>-<pid>-<n>`, unique within the process.
    pub fn new(tag: &str) -> io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vfio-hal-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            log::warn!("removing {}: {e}", self.0.display());
        }
    }
}

/// A fake `sys` and `dev` tree; see the module docs. Removed on drop.
///
/// ```
/// use vfio_hal_linux::fake::FakeHost;
///
/// let fake = FakeHost::new()?;
/// fake.add_device("0000:00:04.0", Some("vfio-pci"), Some(7), Some("vfio0"))?;
/// let host = fake.host();
/// assert_eq!(host.vfio_device_names(), ["0000:00:04.0"]);
/// assert_eq!(host.iommu_group("00:04.0").expect("group"), 7);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct FakeHost {
    root: TempDir,
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(target, link)
}

/// Binds the device `name` at `dir` to the driver at `driver_dir`: the
/// device's `driver` link, and the driver's entry listing it back.
fn bind(dir: &Path, name: &str, driver_dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(driver_dir)?;
    symlink(driver_dir, &dir.join("driver"))?;
    symlink(dir, &driver_dir.join(name))
}

/// Puts the device `name` at `dir` into IOMMU group `group`: its
/// `iommu_group` link, and the group's `devices` entry listing it back.
fn join_group(sys: &Path, dir: &Path, name: &str, group: u32) -> io::Result<()> {
    let gdir = sys.join("kernel/iommu_groups").join(group.to_string());
    std::fs::create_dir_all(gdir.join("devices"))?;
    symlink(&gdir, &dir.join("iommu_group"))?;
    symlink(dir, &gdir.join("devices").join(name))
}

impl FakeHost {
    /// An empty tree (`sys/bus/pci/devices` and `dev` exist, nothing else).
    pub fn new() -> io::Result<Self> {
        let root = TempDir::new("fake-host")?;
        std::fs::create_dir_all(root.path().join("sys/bus/pci/devices"))?;
        std::fs::create_dir_all(root.path().join("dev"))?;
        Ok(Self { root })
    }

    /// The [`Host`] looking at this tree.
    pub fn host(&self) -> Host {
        Host::new(self.path("sys"), self.path("dev"))
    }

    /// `rel` under the tree's root (`sys/...`, `dev/...`).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Adds PCI device `bdf` with ids `1234:11e8` (QEMU's edu), bound to
    /// `driver` (a link into `bus/pci/drivers/<driver>`, which lists it
    /// back), in IOMMU `group`, with VFIO cdev `cdev` (its sysfs entry only;
    /// [`FakeHost::add_node`] adds the `/dev` node). Returns its sysfs
    /// directory.
    pub fn add_device(
        &self,
        bdf: &str,
        driver: Option<&str>,
        group: Option<u32>,
        cdev: Option<&str>,
    ) -> io::Result<PathBuf> {
        let sys = self.path("sys");
        let dir = sys.join("bus/pci/devices").join(bdf);
        write(&dir.join("vendor"), "0x1234\n")?;
        write(&dir.join("device"), "0x11e8\n")?;
        if let Some(d) = driver {
            bind(&dir, bdf, &sys.join("bus/pci/drivers").join(d))?;
        }
        if let Some(g) = group {
            join_group(&sys, &dir, bdf, g)?;
        }
        if let Some(c) = cdev {
            std::fs::create_dir_all(dir.join("vfio-dev").join(c))?;
        }
        Ok(dir)
    }

    /// Adds mediated device `uuid` the way the kernel lays one out: its
    /// directory under its parent (`sys/devices/virtual/<parent>/<parent>/<uuid>`,
    /// linked from `bus/mdev/devices`), its `mdev_type` link into the
    /// parent's `mdev_supported_types/<type_id>` (whose `name` reads
    /// `type_name`), bound to the parent's mdev driver (`parent`), alone in
    /// emulated IOMMU `group`, with VFIO cdev `cdev`. Returns its directory.
    pub fn add_mdev(
        &self,
        uuid: &str,
        parent: &str,
        type_id: &str,
        type_name: &str,
        group: u32,
        cdev: Option<&str>,
    ) -> io::Result<PathBuf> {
        let sys = self.path("sys");
        let parent_dir = sys.join("devices/virtual").join(parent).join(parent);
        let type_dir = parent_dir.join("mdev_supported_types").join(type_id);
        write(&type_dir.join("name"), &format!("{type_name}\n"))?;
        let dir = parent_dir.join(uuid);
        std::fs::create_dir_all(&dir)?;
        symlink(&type_dir, &dir.join("mdev_type"))?;
        symlink(&dir, &sys.join("bus/mdev/devices").join(uuid))?;
        bind(&dir, uuid, &sys.join("bus/mdev/drivers").join(parent))?;
        join_group(&sys, &dir, uuid, group)?;
        if let Some(c) = cdev {
            std::fs::create_dir_all(dir.join("vfio-dev").join(c))?;
        }
        Ok(dir)
    }

    /// Creates the node `rel` under `dev` (an empty file), e.g. `iommu`,
    /// `vfio/vfio`, `vfio/devices/vfio0`.
    pub fn add_node(&self, rel: &str) -> io::Result<()> {
        write(&self.path("dev").join(rel), "")
    }
}
