//! Reading a password on the controlling terminal, as a Java console does.

use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};

/// The controlling terminal, if the process has one.
pub fn open_tty() -> Option<File> {
    OpenOptions::new().read(true).write(true).open("/dev/tty").ok()
}

/// Prompts on `tty` with echo off and reads one line.
///
/// Echo is turned off *before* the prompt is written, so whoever sees the prompt can type
/// without racing the terminal setting. TCSANOW, not TCSAFLUSH: input typed early is kept.
pub fn read_password(tty: &mut File, prompt: &str) -> io::Result<String> {
    let original = tcgetattr(&*tty)?;
    let mut quiet = original.clone();
    quiet
        .local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHOE | LocalFlags::ECHOK | LocalFlags::ECHONL);
    tcsetattr(&*tty, SetArg::TCSANOW, &quiet)?;
    let result = prompt_and_read(tty, prompt);
    let restored = tcsetattr(&*tty, SetArg::TCSANOW, &original);
    // The typed newline was not echoed; end the prompt line ourselves.
    let _ = tty.write_all(b"\n");
    let line = result?;
    restored?;
    Ok(line)
}

fn prompt_and_read(tty: &mut File, prompt: &str) -> io::Result<String> {
    tty.write_all(prompt.as_bytes())?;
    tty.flush()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
