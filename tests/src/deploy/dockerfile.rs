//! A Dockerfile's stages, read just far enough for the deployment test: comments dropped,
//! continuation lines joined, each `FROM image [AS name]` opening a stage whose instructions
//! are kept as `KEYWORD arguments` text.
//!
//! Hand-written on purpose, and small: the crates were weighed and neither fits.
//! `dockerfile-parser` (HPE) is deprecated upstream. `dockerfile-parser-rs` is kept up, but
//! its syntax tree drops what the test checks: an `ENTRYPOINT` in shell form and one in exec
//! (JSON) form both become a word list, so "the program is PID 1 and gets the signals"
//! could no longer be asserted, and of two `RUN --mount` flags it keeps one. Not handled
//! here, because the repository's Dockerfile does not use them: heredocs, the `escape`
//! parser directive, and `ONBUILD`.

/// One build stage.
#[derive(Debug)]
pub struct Stage {
    pub name: Option<String>,
    /// The image it starts from: an image reference or an earlier stage's name.
    pub base: String,
    /// Instructions with continuation lines joined, comments dropped.
    lines: Vec<String>,
}

impl Stage {
    /// The arguments of every `keyword` instruction of the stage, in order.
    pub fn instruction<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = String> + 'a {
        self.lines.iter().filter_map(move |l| {
            let (word, rest) = l.split_once(char::is_whitespace)?;
            word.eq_ignore_ascii_case(keyword)
                .then(|| rest.trim().to_string())
        })
    }
}

/// The stages of a Dockerfile, in order.
pub fn stages(text: &str) -> Vec<Stage> {
    let mut joined = vec![];
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = vec![];
    for line in joined {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0].eq_ignore_ascii_case("FROM") {
            let name = (words.len() >= 4 && words[2].eq_ignore_ascii_case("AS"))
                .then(|| words[3].to_string());
            stages.push(Stage {
                name,
                base: words[1].to_string(),
                lines: vec![],
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        }
    }
    stages
}
