//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Strata: a minimal KVM hypervisor for unikernel-style guests.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest on KVM and run it until it exits.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Manage layered disk images on storage tiers.
    Image(crate::image::ImageArgs),
    /// Serve disk images to VMMs over vhost-user-blk.
    #[command(subcommand)]
    Blk(crate::blk::BlkCommand),
    /// Measure Strata against QEMU.
    #[command(subcommand)]
    Bench(BenchCommand),
}

const RUN_EXAMPLES: &str = "\
Examples:
  strata run                                   boot the built-in hello guest
  strata run --kernel target/guest-images/hello.elf --cmdline 'exit=3'
  strata run --kernel vmlinux --memory 512 --cmdline 'console=ttyS0' --serial guest.log

Exit status:
  the guest's code    the guest wrote it to the debug-exit port (0xf4)
  125                 strata could not start or run the guest (bad flag, image, KVM)
  126                 the guest crashed (triple fault, KVM internal error)
  128+N               stopped by signal N (130 for Ctrl-C, 143 for SIGTERM)";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kernel image: an ELF with a PVH note, or a Linux bzImage.
    /// Without it, the built-in `hello` guest boots.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Guest RAM, in MiB unless suffixed (e.g. 512, 512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "128", value_parser = parse_mib)]
    pub memory: u64,

    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub cpus: u32,

    /// Kernel command line.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub cmdline: String,

    /// Where the serial console goes: `stdout`, `none`, or a file path.
    #[arg(long, value_name = "DEST", default_value = "stdout")]
    pub serial: String,

    /// Write timing and memory figures as JSON to this file when the VM ends.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// A virtio-blk disk served by a vhost-user backend (repeatable):
    /// socket=PATH, then optionally readonly, queues=N and reconnect.
    /// The guest finds disk N at 0xd0000000 + N*4K, IRQ 5+N, announced on
    /// its command line as `virtio_mmio.device=4K@<base>:<irq>`.
    #[arg(long = "disk", value_name = "SPEC", value_parser = crate::run::parse_disk)]
    pub disks: Vec<strata_vmm::config::DiskConfig>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Start-up time and memory overhead of `hello`: Strata vs QEMU.
    Boot(BenchBootArgs),
    /// vhost-user-blk throughput and latency: `strata blk` vs qemu-storage-daemon.
    Blk(crate::bench::blk::BlkBenchArgs),
    /// Block I/O from inside a Strata guest to `strata blk`, beside a host
    /// client on the same backend, and the VMM's memory with a disk attached.
    GuestDisk(crate::bench::guest_disk::GuestDiskBenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchBootArgs {
    /// Rounds; each round starts every contender once, interleaved.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,

    /// QEMU binary to compare against; skipped when it cannot be found.
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,

    /// Also write the results as a Markdown table to this file.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

/// Parses a size in bytes: a plain number is bytes; `K`, `M`, `G`, `T`
/// (optionally followed by `iB` or `B`) are powers of 1024.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(digits_end);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. 4096, 64K, 10G"))?;
    let shift = match suffix
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("`{text}` has an unknown unit: use K, M, G or T")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a size in MiB: a plain number is MiB; with a unit it is read by
/// [`parse_bytes`] and must be a whole number of MiB.
pub fn parse_mib(text: &str) -> Result<u64, String> {
    const MIB: u64 = 1 << 20;
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return trimmed
            .parse()
            .map_err(|_| format!("`{text}` is too large"));
    }
    let bytes = parse_bytes(trimmed)?;
    if bytes % MIB != 0 {
        return Err(format!("`{text}` is not a whole number of MiB"));
    }
    Ok(bytes / MIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_mib() {
        assert_eq!(parse_mib("128"), Ok(128));
        assert_eq!(parse_mib("128M"), Ok(128));
        assert_eq!(parse_mib("128MiB"), Ok(128));
        assert_eq!(parse_mib("2G"), Ok(2048));
        assert_eq!(parse_mib("2gib"), Ok(2048));
        assert_eq!(parse_mib("4096K"), Ok(4));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert!(parse_mib("").unwrap_err().contains("not a size"));
        assert!(parse_mib("lots").unwrap_err().contains("not a size"));
        assert!(parse_mib("12P").unwrap_err().contains("unknown unit"));
        assert!(parse_mib("1000K").unwrap_err().contains("whole number"));
        assert!(
            parse_mib("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_mib("18446744073709551615G")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("1P").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
