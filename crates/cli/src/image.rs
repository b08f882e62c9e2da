//! `vmshare image build DIR -o vol.ext4|vol.erofs`: block-device volumes
//! for `--mount type=ext4|erofs`, built with the distributions' own mkfs.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use vmshare_plan::image::{build_image, Progress};
use vmshare_plan::plan::ImageContent;
use vmshare_plan::ImageFormat;

/// Arguments of `vmshare image`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Build an ext4 or erofs image from a directory (the format follows the -o extension).
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Directory to put in the image.
    dir: PathBuf,
    /// Output image: NAME.ext4 or NAME.erofs.
    #[arg(short, long)]
    output: PathBuf,
    /// ext4 image size, e.g. 512M or 2G (default: the tree plus room to grow).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
}

/// Trees smaller than this build too fast for a progress bar to help.
const PROGRESS_THRESHOLD: u64 = 64 << 20;

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size; write e.g. 512M or 2G"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(format!("'{s}': unknown unit; use K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Runs the subcommand.
pub fn main(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let Command::Build(b) = args.command;
    let format = match b.output.extension().and_then(|e| e.to_str()) {
        Some("ext4") => ImageFormat::Ext4,
        Some("erofs") => ImageFormat::Erofs,
        _ => {
            return Err(format!(
                "{}: name the output NAME.ext4 or NAME.erofs to choose the filesystem",
                b.output.display()
            )
            .into())
        }
    };
    if format == ImageFormat::Erofs && b.size.is_some() {
        return Err(
            "--size applies to ext4 only; erofs images are as large as their contents".into(),
        );
    }
    let show = std::io::stderr().is_terminal();
    let mut bar = |p: Progress| {
        if show && p.total >= PROGRESS_THRESHOLD {
            draw(p);
        }
    };
    let contents = [ImageContent {
        host_path: b.dir.clone(),
        subdir: String::new(),
    }];
    build_image(&b.output, format, &contents, b.size, &mut bar)?;
    if show {
        eprintln!();
    }
    eprintln!(
        "vmshare image: built {} from {}",
        b.output.display(),
        b.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn draw(p: Progress) {
    const WIDTH: u64 = 40;
    let filled = (p.done * WIDTH).checked_div(p.total).unwrap_or(WIDTH);
    let mib = |b: u64| b >> 20;
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {} / {} MiB",
        "#".repeat(usize::try_from(filled).unwrap_or(0)),
        " ".repeat(usize::try_from(WIDTH - filled.min(WIDTH)).unwrap_or(0)),
        mib(p.done),
        mib(p.total)
    );
    let _ = err.flush();
}
