//! `vfio-hal list`: the kernel's VFIO interfaces, the backends they make
//! possible, and the VFIO devices (PCI functions bound to vfio-pci, and
//! mediated devices) with their groups.

use serde_json::{json, Value};
use vfio_hal_facade::host::{Blocker, Bus};
use vfio_hal_facade::{Backend, HostDevice, MOCK_DEVICES};

use crate::describe;
use crate::output::say;
use crate::table::Table;
use crate::{CliError, Ctx};

/// What `auto` would pick for a device, and why.
fn auto_choice(ctx: &Ctx, device: &HostDevice) -> (String, String) {
    match vfio_hal_facade::auto_choice(&ctx.host, device) {
        Some((backend, why)) => (backend.to_string(), why),
        None => (
            "none".to_owned(),
            "no real backend in this build".to_owned(),
        ),
    }
}

/// A PCI function's vendor:device, a mediated device's `mdev:<type>`.
fn ids(d: &HostDevice) -> String {
    match (&d.bus, d.vendor, d.device) {
        (Bus::Mdev(t), ..) => format!("mdev:{}", t.id),
        (Bus::Pci, Some(v), Some(id)) => format!("{v:04x}:{id:04x}"),
        (Bus::Pci, ..) => "?".to_owned(),
    }
}

fn viability(blockers: &[Blocker]) -> String {
    if blockers.is_empty() {
        "yes".to_owned()
    } else {
        let list: Vec<String> = blockers.iter().map(ToString::to_string).collect();
        format!("no: {}", list.join(", "))
    }
}

/// Runs `list`.
pub fn run(ctx: &Ctx) -> Result<(), CliError> {
    let host = &ctx.host;
    let nodes = vfio_hal_facade::host::nodes(host);
    let offers = vfio_hal_facade::host::offers(host);
    let devices: Vec<(HostDevice, Vec<Blocker>, (String, String))> = host
        .vfio_devices()
        .into_iter()
        .map(|d| {
            let blockers = d.group.map(|g| host.blockers(g)).unwrap_or_default();
            let choice = auto_choice(ctx, &d);
            (d, blockers, choice)
        })
        .collect();

    if ctx.json {
        let value = json!({
            "nodes": nodes.iter().map(|n| json!({
                "path": n.path.display().to_string(),
                "present": n.present,
                "role": n.role,
            })).collect::<Vec<_>>(),
            "backends": offers.iter().map(|o| json!({
                "backend": o.backend.name(),
                "available": o.available,
                "reason": o.reason,
            })).collect::<Vec<_>>(),
            "devices": devices.iter().map(|(d, blockers, (backend, reason))| json!({
                "name": d.name,
                "bus": match d.bus { Bus::Pci => "pci", Bus::Mdev(_) => "mdev" },
                "mdev": match &d.bus {
                    Bus::Mdev(t) => describe::mdev_json(t),
                    Bus::Pci => Value::Null,
                },
                "vendor": d.vendor,
                "device": d.device,
                "driver": d.driver,
                "group": d.group,
                "viable": blockers.is_empty() && d.group.is_some(),
                "blockers": blockers.iter().map(|b| json!({"device": b.device, "driver": b.driver})).collect::<Vec<_>>(),
                "cdev": d.cdev,
                "auto_backend": backend,
                "auto_reason": reason,
            })).collect::<Vec<Value>>(),
            "mock_devices": MOCK_DEVICES,
        });
        return ctx.print_json(&value);
    }

    let mut t = Table::new(&["KERNEL INTERFACE", "PRESENT", "ROLE"]);
    for n in &nodes {
        t.row(vec![
            n.path.display().to_string(),
            if n.present { "yes" } else { "no" }.to_owned(),
            n.role.to_owned(),
        ]);
    }
    say!("{}\n", t.render())?;

    let mut t = Table::new(&["BACKEND", "AVAILABLE", "WHY"]);
    for o in &offers {
        t.row(vec![
            o.backend.to_string(),
            if o.available { "yes" } else { "no" }.to_owned(),
            o.reason.clone(),
        ]);
    }
    say!("{}\n", t.render())?;

    if devices.is_empty() {
        return say!(
            "No device is bound to vfio-pci on this machine. Commands given no device, \
             or `{}`, use the built-in mock (--backend {}).\n",
            MOCK_DEVICES.join("` or `"),
            Backend::Mock
        );
    }
    let mut t = Table::new(&["DEVICE", "ID", "GROUP", "VIABLE", "CDEV", "AUTO", "WHY"]);
    for (d, blockers, (backend, reason)) in &devices {
        t.row(vec![
            d.name.clone(),
            ids(d),
            d.group.map_or_else(|| "none".to_owned(), |g| g.to_string()),
            if d.group.is_some() {
                viability(blockers)
            } else {
                "no: no IOMMU group".to_owned()
            },
            d.cdev.clone().unwrap_or_else(|| "-".to_owned()),
            backend.clone(),
            reason.clone(),
        ]);
    }
    say!("{}", t.render())
}
