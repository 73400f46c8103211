//! `vfio-hal`: inspect, poke, benchmark and check VFIO devices through
//! vfio-hal — or, with no VFIO device on the machine, the built-in mock edu.
//!
//! See `docs/CLI.md` for every command with example output.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::Value;
use vfio_hal_facade::{open, Backend, Host, OpenSpec, Opened};

mod access;
mod bench;
mod conformance;
mod describe;
mod error;
mod info;
mod list;
mod output;
mod table;

pub use error::CliError;
use output::say;

/// Inspect, poke, benchmark and check VFIO devices through vfio-hal.
///
/// DEV is a PCI address (0000:00:04.0 or 00:04.0), a sysfs device path, or
/// a model of the built-in mock: edu, copy-engine. With no device bound to
/// vfio-pci on this machine, those names (and no name at all) use the mock.
#[derive(Debug, Parser)]
#[command(name = "vfio-hal", version)]
struct Cli {
    /// Backend: auto probes the kernel (iommufd where the device has a
    /// cdev, else legacy type1); mock is the built-in in-memory backend.
    #[arg(long, global = true, default_value = "auto", value_parser = parse_backend)]
    backend: Backend,

    /// Print JSON on stdout instead of tables (errors too, as {"error": …}).
    #[arg(long, global = true)]
    json: bool,

    /// Read sysfs from this directory instead of /sys (tests, containers);
    /// it must exist.
    #[arg(long, global = true, value_name = "DIR")]
    sys_root: Option<PathBuf>,

    /// Read device nodes from this directory instead of /dev; it must exist.
    #[arg(long, global = true, value_name = "DIR")]
    dev_root: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Devices bound to vfio-pci, their IOMMU groups, and which backends
    /// this kernel offers and why.
    List,
    /// A device's flags, regions (with capabilities), irqs, IOMMU and
    /// features.
    Info {
        /// The device; the mock edu when omitted and nothing is bound to vfio-pci.
        dev: Option<String>,
    },
    /// Reads one register of a region.
    Read(access::ReadArgs),
    /// Writes one register of a region.
    Write(access::WriteArgs),
    /// Region read and DMA map+unmap throughput, in operations per second.
    Bench(bench::BenchArgs),
    /// Runs the conformance suite against a device (QEMU's edu, or the mock's).
    Conformance(conformance::ConformanceArgs),
}

fn parse_backend(text: &str) -> Result<Backend, String> {
    text.parse()
        .map_err(|e: vfio_hal_facade::backend::UnknownBackend| e.to_string())
}

/// Parses `0x1f`, `0b101`, `0o17`, `31` (underscores allowed, no sign).
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let t = text.replace('_', "");
    let (digits, radix) = match t.get(..2) {
        Some("0x" | "0X") => (&t[2..], 16),
        Some("0b" | "0B") => (&t[2..], 2),
        Some("0o" | "0O") => (&t[2..], 8),
        _ => (t.as_str(), 10),
    };
    // from_str_radix also takes a leading `+`; a register offset or value
    // with a sign is more likely a typo than meant.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(format!(
            "`{text}` is not a number: base-{radix} digits expected (0x, 0b, 0o or no prefix, no sign)"
        ));
    }
    u64::from_str_radix(digits, radix).map_err(|_| format!("`{text}` does not fit in 64 bits"))
}

/// The tree `given` on the command line, which must be a directory that
/// can be read, or `default` when none was given: a named tree that is not
/// there is an error, not an empty machine (where the mock would stand in).
fn root(option: &'static str, given: Option<PathBuf>, default: &str) -> Result<PathBuf, CliError> {
    let Some(path) = given else {
        return Ok(PathBuf::from(default));
    };
    match std::fs::read_dir(&path) {
        Ok(_) => Ok(path),
        Err(error) => Err(CliError::Root {
            option,
            path,
            error,
        }),
    }
}

/// Whether `--json` is on the command line (before a `--`), for telling a
/// command line that does not parse.
fn json_requested(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// Global options every command sees.
#[derive(Debug)]
pub struct Ctx {
    /// The backend asked for.
    pub backend: Backend,
    /// JSON output.
    pub json: bool,
    /// The trees inspected.
    pub host: Host,
}

impl Ctx {
    /// Opens `dev` as asked, and says on stderr when the mock stands in.
    pub fn open(&self, dev: Option<&str>) -> Result<Opened, CliError> {
        let spec = match dev {
            Some(d) => OpenSpec::new(d),
            None => OpenSpec::unnamed(),
        }
        .with_backend(self.backend)
        .with_host(self.host.clone());
        let opened = open(&spec)?;
        if opened.backend == Backend::Mock && self.backend == Backend::Auto {
            output::note(format_args!(
                "note: {}: mock backend: {}",
                opened.name, opened.reason
            ));
        }
        Ok(opened)
    }

    /// Prints `value` as pretty JSON on stdout.
    pub fn print_json(&self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Failed(format!("JSON encoding: {e}")))?;
        say!("{text}\n")
    }
}

/// The command line, or `None` when it asked for help or the version
/// (printed here).
fn parse(args: &[OsString]) -> Result<Option<Cli>, CliError> {
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(Some(cli)),
        Err(e) if !e.use_stderr() => say!("{}", e.render()).map(|()| None),
        Err(e) => Err(CliError::CommandLine(e)),
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx {
        backend: cli.backend,
        json: cli.json,
        host: Host::new(
            root("--sys-root", cli.sys_root, "/sys")?,
            root("--dev-root", cli.dev_root, "/dev")?,
        ),
    };
    match cli.command {
        Command::List => list::run(&ctx),
        Command::Info { dev } => info::run(&ctx, dev.as_deref()),
        Command::Read(args) => access::read(&ctx, &args),
        Command::Write(args) => access::write(&ctx, &args),
        Command::Bench(args) => bench::run(&ctx, &args),
        Command::Conformance(args) => conformance::run(&ctx, &args),
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let result = match parse(&args) {
        Ok(Some(cli)) => run(cli),
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(json_requested(&args)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_in_every_base() {
        assert_eq!(parse_u64("0x10"), Ok(16));
        assert_eq!(parse_u64("0b101"), Ok(5));
        assert_eq!(parse_u64("0o17"), Ok(15));
        assert_eq!(parse_u64("1_000"), Ok(1000));
        assert!(parse_u64("0x").is_err());
        assert!(parse_u64("ten").is_err());
        assert!(parse_u64("0x1_0000_0000_0000_0000").is_err());
        for signed in ["+5", "0x+5", "-5", "+0b1", "0o+7"] {
            assert!(parse_u64(signed).is_err(), "{signed}");
        }
        assert_eq!(
            parse_u64("18446744073709551616"),
            Err("`18446744073709551616` does not fit in 64 bits".to_owned())
        );
    }

    #[test]
    fn json_is_looked_for_before_the_end_of_options() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(json_requested(&args(&["vfio-hal", "read", "--json"])));
        assert!(!json_requested(&args(&["vfio-hal", "read"])));
        assert!(!json_requested(&args(&["vfio-hal", "--", "--json"])));
        assert!(!json_requested(&args(&["--json"])), "not the program name");
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
