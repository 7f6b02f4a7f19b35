//! `nspawn::Machine` as a [`Target`].

use crate::{CommandOutput, Result, Target};

impl Target for nspawn::Machine {
    fn command(&self, argv: &[&str]) -> Result<CommandOutput> {
        let (program, args) = argv.split_first().ok_or("an empty command")?;
        let out = nspawn::Machine::command(self, program)
            .args(args)
            .output()?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if !self.exists(path) {
            return Ok(None);
        }
        Ok(Some(self.read(path)?))
    }

    fn write_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<()> {
        self.write(path, contents)?;
        self.check(&["chmod", &format!("{mode:o}"), path]).map(drop)
    }
}
