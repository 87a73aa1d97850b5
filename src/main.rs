//! The `colvault` command line tool: a thin layer over the library. Its modules live in `src/cli/`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
