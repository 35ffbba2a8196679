//! `strata image`: layered disk images on named storage tiers.

mod output;
mod progress;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use strata_storage::images::{CreateFrom, ImportFormat, Store};
use strata_storage::store::StoreConfig;

use crate::args::parse_bytes;
use crate::exit::{ExitStatus, Failure};
use progress::Bar;

const IMAGE_EXAMPLES: &str = "\
Examples:
  # Two tiers given as flags (or write them into <store>/strata.toml):
  export STRATA_STORE=/var/lib/strata
  T='--tier fast=/mnt/nvme/strata:fast --tier capacity=/mnt/hdd/strata:capacity'
  strata image $T import golden debian.qcow2        # a frozen base on the capacity tier
  strata image $T create web1 --from golden         # a copy-on-write layer on the fast tier
  strata image $T snapshot web1 --as web1-before    # freeze, keep writing in a new layer
  strata image $T info web1                         # the chain, tiers, bytes per layer
  strata image $T diff web1 web1-before             # blocks written since the snapshot
  strata image $T copy web1 --to-tier capacity      # snapshot, copy, difference, switch
  strata image $T export web1 web1.raw";

/// `strata image` and its options.
#[derive(Debug, Args)]
#[command(after_help = IMAGE_EXAMPLES)]
pub struct ImageArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    command: ImageCommand,
}

/// Where the catalogue and the tiers are.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Directory of the image catalogue (and of strata.toml by default).
    #[arg(
        long,
        global = true,
        env = "STRATA_STORE",
        value_name = "DIR",
        default_value = "/var/lib/strata"
    )]
    pub store: PathBuf,
    /// Tier configuration file [default: <store>/strata.toml].
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "tier")]
    config: Option<PathBuf>,
    /// A tier, instead of a configuration file: NAME=PATH[:CLASS] (repeatable).
    #[arg(long, global = true, value_name = "NAME=PATH[:CLASS]")]
    tier: Vec<String>,
    /// Tier for new copy-on-write layers (with --tier).
    #[arg(long, global = true, value_name = "TIER")]
    overlays: Option<String>,
    /// Tier for frozen bases and imports (with --tier).
    #[arg(long, global = true, value_name = "TIER")]
    bases: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Create an image: empty, or a copy-on-write layer over another image or a raw file.
    #[command(
        after_help = "Examples:\n  strata image create web1 --from golden\n  strata image create scratch --size 10G\n  strata image create web2 --raw /srv/images/debian-12.raw"
    )]
    Create {
        /// Name of the new image.
        name: String,
        /// An empty disk of this size (e.g. 10G).
        #[arg(long, value_parser = parse_bytes, conflicts_with_all = ["from", "raw"], required_unless_present_any = ["from", "raw"])]
        size: Option<u64>,
        /// Base the new image on this image (its top is frozen first if needed).
        #[arg(long, value_name = "IMAGE", conflicts_with = "raw")]
        from: Option<String>,
        /// Base the new image on this raw golden image file, used in place.
        #[arg(long, value_name = "FILE")]
        raw: Option<PathBuf>,
        /// Block size of a new empty or raw-based image (4K..2M, a power of two).
        #[arg(long, value_parser = parse_bytes, default_value = "64K")]
        block_size: u64,
    },
    /// Freeze an image's top layer and continue writing in a new one.
    #[command(
        after_help = "Examples:\n  strata image snapshot web1\n  strata image snapshot web1 --as web1-before-upgrade"
    )]
    Snapshot {
        /// The image.
        name: String,
        /// Also name the frozen snapshot, so it can be used with diff, create --from, export.
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
    },
    /// Show an image's chain: layers, tiers, bytes.
    #[command(after_help = "Examples:\n  strata image info web1\n  strata image info web1 --json")]
    Info {
        /// The image.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the images in the catalogue.
    #[command(after_help = "Examples:\n  strata image list --json")]
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify an image's headers, tables, checksums and links (non-zero exit if broken).
    #[command(after_help = "Examples:\n  strata image check web1 || echo damaged")]
    Check {
        /// The image.
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show which blocks differ between two images or snapshots.
    #[command(
        after_help = "Examples:\n  strata image diff web1 web1-before-upgrade\n  strata image diff web1 web2 --json"
    )]
    Diff {
        /// First image.
        a: String,
        /// Second image.
        b: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Merge an image's top layer into its parent.
    #[command(after_help = "Examples:\n  strata image commit web1")]
    Commit {
        /// The image.
        name: String,
    },
    /// Write an image to a new raw file.
    #[command(after_help = "Examples:\n  strata image export web1 web1.raw")]
    Export {
        /// The image.
        name: String,
        /// The raw file to create.
        file: PathBuf,
    },
    /// Import a raw or qcow2 file as a frozen base image.
    #[command(
        after_help = "Examples:\n  strata image import golden debian-12.qcow2\n  strata image import golden disk.img --format raw --block-size 128K"
    )]
    Import {
        /// Name of the new image.
        name: String,
        /// The file to import.
        file: PathBuf,
        /// Its format.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Block size of the imported layer.
        #[arg(long, value_parser = parse_bytes, default_value = "64K")]
        block_size: u64,
    },
    /// Move an image to another tier: snapshot, copy, then only the difference.
    #[command(visible_alias = "migrate")]
    #[command(
        after_help = "Examples:\n  strata image copy web1 --to-tier capacity\n  strata image migrate web1 --to-tier fast --json"
    )]
    Copy {
        /// The image.
        name: String,
        /// The tier to move it to.
        #[arg(long, value_name = "TIER")]
        to_tier: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the engine against a qcow2 chain (`qemu-img bench`).
    Bench(crate::bench::storage::StorageBenchArgs),
    /// Remove an image and the layers no other image uses.
    #[command(after_help = "Examples:\n  strata image rm web1")]
    Rm {
        /// The image.
        name: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    Auto,
    Raw,
    Qcow2,
}

fn block_size(bytes: u64) -> Result<u32, Failure> {
    u32::try_from(bytes)
        .ok()
        .filter(|b| b.is_power_of_two() && (4096..=(2 << 20)).contains(b))
        .ok_or_else(|| {
            Failure(format!(
                "--block-size {bytes} is not a power of two from 4K to 2M"
            ))
        })
}

pub fn open_store(args: &StoreArgs) -> Result<Store, Failure> {
    let config = if !args.tier.is_empty() {
        StoreConfig::from_tier_flags(&args.tier, args.overlays.as_deref(), args.bases.as_deref())
    } else {
        let path = args
            .config
            .clone()
            .unwrap_or_else(|| args.store.join("strata.toml"));
        if args.config.is_none() && !path.exists() {
            return Err(Failure(format!(
                "no storage tiers: write {} or pass --tier NAME=PATH (see `strata image --help`)",
                path.display()
            )));
        }
        StoreConfig::load(&path)
    }
    .map_err(|e| Failure(e.to_string()))?;
    config.validate().map_err(|e| Failure(e.to_string()))?;
    if !args.store.is_dir() {
        return Err(Failure(format!(
            "store directory {} does not exist: create it or pass --store DIR",
            args.store.display()
        )));
    }
    Ok(Store::new(config, args.store.clone()))
}

fn fail(e: impl std::fmt::Display) -> Failure {
    Failure(e.to_string())
}

/// Runs `strata image ...`.
pub fn run(args: &ImageArgs) -> Result<ExitStatus, Failure> {
    // The benchmark makes its own chains and needs no tiers.
    if let ImageCommand::Bench(bench) = &args.command {
        return crate::bench::storage::run(bench);
    }
    let store = open_store(&args.store)?;
    match &args.command {
        ImageCommand::Create {
            name,
            size,
            from,
            raw,
            block_size: bs,
        } => {
            let source = match (size, from, raw) {
                (Some(size), _, _) => CreateFrom::Empty(*size),
                (_, Some(base), _) => CreateFrom::Image(base.clone()),
                (_, _, Some(file)) => CreateFrom::Raw(file.clone()),
                _ => return Err(Failure("give --size, --from or --raw".to_string())),
            };
            store
                .create(name, &source, block_size(*bs)?)
                .map_err(fail)?;
            println!("created image {name}");
        }
        ImageCommand::Snapshot { name, as_name } => {
            let id = store.snapshot(name, as_name.as_deref()).map_err(fail)?;
            match as_name {
                Some(snap) => println!("froze layer {id} of {name} as {snap}"),
                None => println!("froze layer {id} of {name}"),
            }
        }
        ImageCommand::Info { name, json } => output::info(&store.info(name).map_err(fail)?, *json),
        ImageCommand::List { json } => output::list(&store, *json).map_err(fail)?,
        ImageCommand::Check { name, json } => {
            output::check(&store.check(name).map_err(fail)?, name, *json)
        }
        ImageCommand::Diff { a, b, json } => {
            let (ranges, bs) = store.diff(a, b).map_err(fail)?;
            output::diff(&ranges, bs, *json);
        }
        ImageCommand::Commit { name } => {
            let mut bar = Bar::new("committing");
            store.commit(name, &mut bar).map_err(fail)?;
            bar.finish();
            println!("merged the top layer of {name} into its parent");
        }
        ImageCommand::Export { name, file } => {
            let mut bar = Bar::new("exporting");
            let written = store.export(name, file, &mut bar).map_err(fail)?;
            bar.finish();
            println!(
                "exported {name} to {} ({} of data)",
                file.display(),
                output::bytes(written)
            );
        }
        ImageCommand::Import {
            name,
            file,
            format,
            block_size: bs,
        } => {
            let format = match format {
                FormatArg::Auto => ImportFormat::Auto,
                FormatArg::Raw => ImportFormat::Raw,
                FormatArg::Qcow2 => ImportFormat::Qcow2,
            };
            check_readable(file)?;
            let mut bar = Bar::new("importing");
            store
                .import(name, file, format, block_size(*bs)?, &mut bar)
                .map_err(fail)?;
            bar.finish();
            println!("imported {} as image {name}", file.display());
        }
        ImageCommand::Copy {
            name,
            to_tier,
            json,
        } => {
            let mut bar = Bar::new("copying");
            let report = store.copy_to_tier(name, to_tier, &mut bar).map_err(fail)?;
            bar.finish();
            output::copy(name, to_tier, &report, *json);
        }
        ImageCommand::Bench(_) => unreachable!("handled before the store is opened"),
        ImageCommand::Rm { name } => {
            let deleted = store.remove(name).map_err(fail)?;
            println!(
                "removed image {name} ({} layer files deleted)",
                deleted.len()
            );
        }
    }
    Ok(ExitStatus::Success)
}

fn check_readable(file: &Path) -> Result<(), Failure> {
    std::fs::File::open(file)
        .map(drop)
        .map_err(|e| Failure(format!("cannot read {}: {e}", file.display())))
}
