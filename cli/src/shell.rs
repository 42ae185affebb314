//! Turning command lines into commands, as virsh does: a single argument is parsed as a
//! command string (`"start vm; dominfo vm"`, with quotes and backslash escapes), several
//! arguments are taken as they are, and `;` separates commands in both.

/// Splits a command string into commands, each a list of words.
pub fn split_commands(line: &str) -> Result<Vec<Vec<String>>, String> {
    let mut commands = Vec::new();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars
                    .next()
                    .ok_or("dangling \\ at the end of the command")?;
                word.push(next);
                in_word = true;
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => {
                            word.push(chars.next().ok_or("dangling \\ inside quotes")?)
                        }
                        Some(other) => word.push(other),
                        None => return Err(format!("missing closing {c}")),
                    }
                }
            }
            ';' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
                if !words.is_empty() {
                    commands.push(std::mem::take(&mut words));
                }
            }
            '#' if !in_word && words.is_empty() => {
                // A comment runs to the end of the line.
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if !words.is_empty() {
        commands.push(words);
    }
    Ok(commands)
}

/// Splits already-separated arguments into commands at `;` arguments.
pub fn split_argv(args: &[String]) -> Vec<Vec<String>> {
    args.split(|a| a == ";")
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_virsh() {
        let c = split_commands("list --all; dominfo 'my vm' ;domstate \"a\\\"b\"").unwrap();
        assert_eq!(
            c,
            vec![
                vec!["list".to_string(), "--all".into()],
                vec!["dominfo".into(), "my vm".into()],
                vec!["domstate".into(), "a\"b".into()],
            ]
        );
        assert_eq!(split_commands("  ;; ").unwrap(), Vec::<Vec<String>>::new());
        assert!(
            split_commands("dominfo 'x")
                .unwrap_err()
                .contains("missing closing '")
        );
        assert_eq!(
            split_commands("# comment\nlist").unwrap(),
            vec![vec!["list".to_string()]]
        );
        let argv: Vec<String> = ["list", ";", "uri"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            split_argv(&argv),
            vec![vec!["list".to_string()], vec!["uri".to_string()]]
        );
    }
}
