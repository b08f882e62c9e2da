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

/// `--size`, as docker sizes are written (`vmshare_plan::size`). At least 1 MiB:
/// mkfs.ext4 failed below that with "Illegal inode number".
fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = vmshare_plan::size::parse_bytes(s).map_err(|why| format!("'{s}': {why}"))?;
    if bytes < 1 << 20 {
        return Err(format!("'{s}' is too small; an image takes 1M at least"));
    }
    Ok(bytes)
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

#[cfg(test)]
mod tests {
    use super::parse_size;

    /// The forms are `vmshare_plan::size`'s; what `--size` adds is its least.
    #[test]
    fn an_image_size_is_1m_at_least() {
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        let e = parse_size("64k").expect_err("too small");
        assert!(e.contains("1M at least"), "{e}");
        assert!(parse_size("2Q")
            .expect_err("bad unit")
            .starts_with("'2Q': "));
    }
}
