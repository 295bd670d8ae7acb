//! `verdict-workbench-hash`: prints the argon2 hash of a password for a
//! `[[workbench.users]]` entry's `password_hash`. The password is read from
//! standard input (its first line), never from the command line, so it
//! stays out of the shell's history and the process list.
//!
//!     verdict-workbench-hash < password.txt

use std::io::BufRead;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        eprintln!("verdict-workbench-hash: cannot read the password from standard input");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("verdict-workbench-hash: give the password on standard input (one line)");
        return ExitCode::FAILURE;
    }
    println!("{}", verdict_workbench::hash_password(password));
    ExitCode::SUCCESS
}
