//! The app's command-line arguments: what followed `--` on the `flint run`
//! command line, joined by single spaces (ABI.md section 3).

/// The app's arguments, passed to its `main` by [`crate::entry!`].
///
/// ```
/// let args = guest_kernel::Args::new("a  b c");
/// assert_eq!(args.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
/// assert_eq!(args.len(), 3);
/// assert_eq!(args.as_str(), "a  b c");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Args {
    line: &'static str,
}

impl Args {
    /// Arguments read from a command line (the kernel makes them from
    /// `BootInfo`; tests and host code may make their own).
    pub const fn new(line: &'static str) -> Args {
        Args { line }
    }

    /// The whole command line, as the monitor passed it.
    pub const fn as_str(&self) -> &'static str {
        self.line
    }

    /// The arguments: the command line split on spaces, empty words skipped.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + Clone {
        self.line.split(' ').filter(|word| !word.is_empty())
    }

    /// The `n`-th argument, counting from 0.
    pub fn get(&self, n: usize) -> Option<&'static str> {
        self.iter().nth(n)
    }

    /// True if there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// How many arguments there are.
    pub fn len(&self) -> usize {
        self.iter().count()
    }
}

#[cfg(test)]
mod tests {
    use super::Args;

    #[test]
    fn empty_command_line_has_no_arguments() {
        let args = Args::new("");
        assert!(args.is_empty());
        assert_eq!(args.len(), 0);
        assert_eq!(args.get(0), None);
    }

    #[test]
    fn arguments_are_words_split_on_spaces() {
        let args = Args::new(" one two  three ");
        assert!(!args.is_empty());
        assert_eq!(args.len(), 3);
        assert_eq!(args.get(1), Some("two"));
        assert_eq!(args.iter().last(), Some("three"));
    }
}
