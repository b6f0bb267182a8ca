//! `plantain`: generate images, fetch and list models, measure speed.

mod bench;
mod edit;
mod eval_edits;
mod eval_loop;
mod eval_photos;
mod eval_retext;
mod eval_text;
mod eval_upscale;
mod generate;
mod hubcmd;
mod io;
mod nano_cmd;
mod provenance_cmd;
mod serve;
mod upscale;
mod verify;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "plantain", version, about = "Open, self-hosted image generation (Stable Diffusion family on CPU/GPU)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make an image from a prompt (and optionally an image and a mask to edit).
    Generate(Box<generate::Args>),
    /// Edit a picture by an instruction; only the region it names changes.
    Edit(Box<edit::EditArgs>),
    /// Put the subjects of some pictures into the scene of another.
    Fuse(Box<edit::FuseArgs>),
    /// Download a model from the Hugging Face hub into the local cache.
    Pull(hubcmd::PullArgs),
    /// List the models in the local caches.
    Models(hubcmd::ModelsArgs),
    /// Time text encoding, UNet steps, VAE and a 1-step SD-Turbo run on full-size random weights.
    Bench(bench::Args),
    /// Enlarge a picture 2, 3 or 4 times with Real-ESRGAN (x4plus for photographs, anime or
    /// animevideov3 for illustrations).
    Upscale(upscale::Args),
    /// Check files for plantain's watermark and C2PA Content Credentials (one verdict per file).
    Verify(verify::Args),
    /// Train a model of plantain's own (plantain-nano) on the synthetic world.
    #[command(subcommand)]
    Train(nano_cmd::TrainCommand),
    /// Measure prompt adherence with the synthetic world's scene checker.
    #[command(subcommand)]
    Eval(nano_cmd::EvalCommand),
    /// Run the Gemini- and OpenAI-compatible image API server.
    Serve(serve::Args),
    /// Manage the server's API keys (create, list, revoke).
    Keys(serve::KeysArgs),
}

/// Logs to stderr at `PLANTAIN_LOG`, else at `default` (a tracing filter).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLANTAIN_LOG")
        .unwrap_or_else(|_| plantain_service::config::log_filter(default).into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // `serve` logs at its config's level, known once the config is read.
        init_logging("warn");
        quiet_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Generate(a) => generate::run(*a),
        Command::Edit(a) => edit::run_edit(*a),
        Command::Fuse(a) => edit::run_fuse(*a),
        Command::Pull(a) => hubcmd::pull(a),
        Command::Models(a) => hubcmd::models(a),
        Command::Bench(a) => bench::run(a),
        Command::Upscale(a) => upscale::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Train(c) => nano_cmd::run(c),
        Command::Eval(c) => nano_cmd::eval(c),
        Command::Serve(a) => serve::run(a),
        Command::Keys(a) => serve::keys(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Printing commands end quietly when their reader goes away (`plantain verify … | head`), as
/// Unix tools do, instead of panicking on EPIPE. The server keeps Rust's default (SIGPIPE
/// ignored): a client that vanishes must not kill it.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring a signal's default disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
