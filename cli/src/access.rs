//! `vfio-hal read` and `vfio-hal write`: one register access of a given width.
//!
//! Each access is one `Region::read`/`Region::write` of exactly `--width`
//! bytes, little-endian, so it reaches the device as a single access of
//! that width (what device registers need). Every invocation opens the
//! device afresh: on the mock, state does not survive between commands —
//! hence `write --read-back`.

use clap::Args;
use serde_json::json;
use vfio_hal::device::DeviceKind;
use vfio_hal::dynamic::DynRegion;
use vfio_hal::prelude::*;
use vfio_hal_facade::Opened;

use crate::describe;
use crate::output::say;
use crate::table::{hex, Table};
use crate::{parse_u64, CliError, Ctx};

fn parse_width(text: &str) -> Result<usize, String> {
    match text {
        "1" => Ok(1),
        "2" => Ok(2),
        "4" => Ok(4),
        "8" => Ok(8),
        _ => Err(format!("width `{text}` is not one of 1, 2, 4, 8")),
    }
}

/// Arguments of `read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The device (PCI address, sysfs path, or mock model).
    dev: String,
    /// Region: bar0..bar5, rom, config, vga, or an index.
    #[arg(value_parser = describe::parse_region)]
    region: u32,
    /// Byte offset in the region (0x hex, 0b binary, or decimal).
    #[arg(value_parser = parse_u64)]
    offset: u64,
    /// Access width in bytes: 1, 2, 4 or 8.
    #[arg(long, short, default_value = "4", value_parser = parse_width)]
    width: usize,
}

/// Arguments of `write`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The device (PCI address, sysfs path, or mock model).
    dev: String,
    /// Region: bar0..bar5, rom, config, vga, or an index.
    #[arg(value_parser = describe::parse_region)]
    region: u32,
    /// Byte offset in the region (0x hex, 0b binary, or decimal).
    #[arg(value_parser = parse_u64)]
    offset: u64,
    /// The value; it must fit in --width bytes.
    #[arg(value_parser = parse_u64)]
    value: u64,
    /// Access width in bytes: 1, 2, 4 or 8.
    #[arg(long, short, default_value = "4", value_parser = parse_width)]
    width: usize,
    /// Read the register back after writing, in the same session.
    #[arg(long)]
    read_back: bool,
}

fn read_value(region: &impl Region, offset: u64, width: usize) -> vfio_hal::Result<u64> {
    let mut bytes = [0u8; 8];
    region.read(offset, &mut bytes[..width])?;
    Ok(u64::from_le_bytes(bytes))
}

fn digits(value: u64, width: usize) -> String {
    format!("{value:#0w$x}", w = 2 + 2 * width)
}

/// Opens `dev` and its region `index`, with the region's display name.
fn open_region(ctx: &Ctx, dev: &str, index: u32) -> Result<(Opened, String, DynRegion), CliError> {
    let opened = ctx.open(Some(dev))?;
    let pci = opened.device.info().kind() == DeviceKind::Pci;
    let name = describe::region_name(pci, index);
    let region = opened
        .device
        .region(index)
        .map_err(CliError::hal(format!("region {name}")))?;
    Ok((opened, name, region))
}

/// Runs `read`.
pub fn read(ctx: &Ctx, args: &ReadArgs) -> Result<(), CliError> {
    let (opened, name, region) = open_region(ctx, &args.dev, args.region)?;
    let value = read_value(&region, args.offset, args.width).map_err(CliError::hal(format!(
        "read {} bytes at {name}+{}",
        args.width,
        hex(args.offset)
    )))?;
    if ctx.json {
        return ctx.print_json(&json!({
            "device": opened.name,
            "backend": opened.backend.name(),
            "region": args.region,
            "region_name": name,
            "offset": args.offset,
            "width": args.width,
            "value": value,
        }));
    }
    let mut t = Table::new(&["DEVICE", "REGION", "OFFSET", "WIDTH", "VALUE"]);
    t.row(vec![
        opened.name.clone(),
        name,
        hex(args.offset),
        args.width.to_string(),
        digits(value, args.width),
    ]);
    say!("{}", t.render())
}

/// Runs `write`.
pub fn write(ctx: &Ctx, args: &WriteArgs) -> Result<(), CliError> {
    if args.width < 8 && args.value >> (8 * args.width) != 0 {
        return Err(CliError::Usage(format!(
            "value {} does not fit in {} byte(s)",
            hex(args.value),
            args.width
        )));
    }
    let (opened, name, region) = open_region(ctx, &args.dev, args.region)?;
    let at = format!("{name}+{}", hex(args.offset));
    region
        .write(args.offset, &args.value.to_le_bytes()[..args.width])
        .map_err(CliError::hal(format!("write {} bytes at {at}", args.width)))?;
    let read_back = if args.read_back {
        Some(
            read_value(&region, args.offset, args.width)
                .map_err(CliError::hal(format!("read back {at}")))?,
        )
    } else {
        None
    };
    if ctx.json {
        return ctx.print_json(&json!({
            "device": opened.name,
            "backend": opened.backend.name(),
            "region": args.region,
            "region_name": name,
            "offset": args.offset,
            "width": args.width,
            "written": args.value,
            "read_back": read_back,
        }));
    }
    let mut t = Table::new(&[
        "DEVICE",
        "REGION",
        "OFFSET",
        "WIDTH",
        "WRITTEN",
        "READ BACK",
    ]);
    t.row(vec![
        opened.name.clone(),
        name,
        hex(args.offset),
        args.width.to_string(),
        digits(args.value, args.width),
        read_back.map_or_else(|| "-".to_owned(), |v| digits(v, args.width)),
    ]);
    say!("{}", t.render())
}
