//! Reply templates: a sandboxed minijinja body (strict undefined, no
//! loader, bounded run time and output) using context variables about the
//! conversation and required slots (`{{ slot.empathy }}`) the agent writes
//! for this customer. A template without a slot would be a canned reply,
//! so it is refused at save time, as are syntax errors and unknown names.

use minijinja::{Environment, UndefinedBehavior, Value};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

/// Variables a template may use besides its slots.
pub const CONTEXT_VARS: &[&str] = &[
    "author.name",
    "author.handle",
    "brand.name",
    "agent.first_name",
    "message.excerpt",
    "conversation.age",
];

/// minijinja's own global functions, reported among "undeclared" names.
const BUILTIN_GLOBALS: &[&str] = &["range", "dict", "namespace", "lipsum", "cycler", "joiner"];

pub const MAX_BODY: usize = 5_000;
pub const MAX_OUTPUT: usize = 10_000;
const FUEL: u64 = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotSpec {
    pub name: String,
    /// What the agent should write here, shown in the composer.
    pub guidance: String,
    pub min_length: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    #[error("line {line}: unknown variable {name:?} (use a slot or one of: {})", CONTEXT_VARS.join(", "))]
    UnknownVariable { line: usize, name: String },
    #[error("a template needs at least one slot the agent writes, e.g. {{{{ slot.empathy }}}}")]
    NoSlot,
    #[error("slot {0:?} is declared but never used in the body")]
    UnusedSlot(String),
    #[error("slot name {0:?} must be a lower-case identifier")]
    BadSlotName(String),
    #[error("the body is longer than {MAX_BODY} characters")]
    TooLong,
    #[error("the template cannot be rendered: {0}")]
    Unrenderable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("the template could not be rendered: {0}")]
    Failed(String),
    #[error("the rendered reply is longer than {MAX_OUTPUT} characters")]
    TooLong,
}

/// A template checked at save time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    body: String,
    slots: Vec<SlotSpec>,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(20);
    env
}

fn line_of(body: &str, needle: &str) -> usize {
    body.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

/// The quoted strings of an expression (`'…'` or `"…"`, a backslash
/// escaping the next character).
fn string_literals(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut chars = expr.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' && c != '\'' {
            continue;
        }
        let mut escaped = false;
        for (j, d) in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if d == '\\' {
                escaped = true;
            } else if d == c {
                out.push(&expr[i + 1..j]);
                break;
            }
        }
    }
    out
}

impl Template {
    pub fn parse(body: &str, slots: Vec<SlotSpec>) -> Result<Self, TemplateError> {
        if body.chars().count() > MAX_BODY {
            return Err(TemplateError::TooLong);
        }
        for s in &slots {
            let ok = !s.name.is_empty()
                && s.name.len() <= 40
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && s.name.starts_with(|c: char| c.is_ascii_lowercase());
            if !ok {
                return Err(TemplateError::BadSlotName(s.name.clone()));
            }
        }
        let env = env();
        let tmpl = env
            .template_from_str(body)
            .map_err(|e| TemplateError::Syntax {
                line: e.line().unwrap_or(1),
                reason: e.detail().unwrap_or("syntax error").to_string(),
            })?;
        let used = tmpl.undeclared_variables(true);
        let mut used_slots = Vec::new();
        let mut names: Vec<&String> = used.iter().collect();
        names.sort();
        for name in names {
            if let Some(slot) = name.strip_prefix("slot.") {
                if slots.iter().any(|s| s.name == slot) {
                    used_slots.push(slot.to_string());
                    continue;
                }
            } else if CONTEXT_VARS.contains(&name.as_str())
                || BUILTIN_GLOBALS.contains(&name.as_str())
            {
                continue;
            }
            return Err(TemplateError::UnknownVariable {
                line: line_of(body, name),
                name: name.clone(),
            });
        }
        if slots.is_empty() || used_slots.is_empty() {
            return Err(TemplateError::NoSlot);
        }
        if let Some(unused) = slots.iter().find(|s| !used_slots.contains(&s.name)) {
            return Err(TemplateError::UnusedSlot(unused.name.clone()));
        }
        Ok(Self {
            body: body.to_string(),
            slots,
        })
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    pub fn slots(&self) -> &[SlotSpec] {
        &self.slots
    }

    /// The fixed text of the template: its text outside expressions, and
    /// the string literals inside them (`{{ "Sorry for the trouble" }}` is
    /// the template's wording all the same), for the "a slot merely
    /// repeats the template" check.
    pub fn fixed_text(&self) -> String {
        let mut out = String::new();
        let mut rest = self.body.as_str();
        loop {
            let open = [rest.find("{{"), rest.find("{%"), rest.find("{#")]
                .into_iter()
                .flatten()
                .min();
            let Some(i) = open else {
                out.push_str(rest);
                return out;
            };
            out.push_str(&rest[..i]);
            out.push(' ');
            let close = match &rest[i..i + 2] {
                "{{" => "}}",
                "{%" => "%}",
                _ => "#}",
            };
            let Some(j) = rest[i + 2..].find(close) else {
                return out;
            };
            if close != "#}" {
                for literal in string_literals(&rest[i + 2..i + 2 + j]) {
                    out.push_str(literal);
                    out.push(' ');
                }
            }
            rest = &rest[i + 2 + j + 2..];
        }
    }

    /// Renders once with every context variable and slot given a sample
    /// value: a filter or test that does not exist fails only when
    /// rendered, and would then fail every reply written with the
    /// template, blamed on the agent's slots.
    pub fn trial(&self) -> Result<(), TemplateError> {
        let context: HashMap<&str, String> = CONTEXT_VARS
            .iter()
            .map(|v| (*v, "Sample".to_string()))
            .collect();
        let slots: HashMap<String, String> = self
            .slots
            .iter()
            .map(|s| (s.name.clone(), "sample words".to_string()))
            .collect();
        match self.render(&context, &slots) {
            Err(RenderError::Failed(reason)) => Err(TemplateError::Unrenderable(reason)),
            // Too long with sample words: the agent's own decide.
            Ok(_) | Err(RenderError::TooLong) => Ok(()),
        }
    }

    /// Renders with the conversation's context and the agent's slots.
    /// Missing slots render empty here; the guard reports them.
    pub fn render(
        &self,
        context: &HashMap<&str, String>,
        slots: &HashMap<String, String>,
    ) -> Result<String, RenderError> {
        let mut root: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for (path, v) in context {
            if let Some((obj, field)) = path.split_once('.') {
                root.entry(obj.to_string())
                    .or_default()
                    .insert(field.to_string(), Value::from(v.clone()));
            }
        }
        for var in CONTEXT_VARS {
            let (obj, field) = var.split_once('.').expect("dotted");
            root.entry(obj.to_string())
                .or_default()
                .entry(field.to_string())
                .or_insert_with(|| Value::from(""));
        }
        let slot_map = root.entry("slot".into()).or_default();
        for s in &self.slots {
            slot_map.insert(
                s.name.clone(),
                Value::from(slots.get(&s.name).cloned().unwrap_or_default()),
            );
        }
        let ctx: BTreeMap<String, Value> =
            root.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
        let env = env();
        let out = env
            .render_str(&self.body, Value::from(ctx))
            .map_err(|e| RenderError::Failed(e.to_string()))?;
        if out.chars().count() > MAX_OUTPUT {
            return Err(RenderError::TooLong);
        }
        Ok(out.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(name: &str, min: u32) -> SlotSpec {
        SlotSpec {
            name: name.into(),
            guidance: "say it in your words".into(),
            min_length: min,
        }
    }

    #[test]
    fn valid_templates_render_with_context_and_slots() {
        let t = Template::parse(
            "Hi {{ author.name }}, {{ slot.empathy }}\n— {{ agent.first_name }} at {{ brand.name }}",
            vec![slot("empathy", 10)],
        )
        .unwrap();
        let ctx = HashMap::from([
            ("author.name", "Ana".to_string()),
            ("agent.first_name", "Sam".into()),
            ("brand.name", "Brew Co".into()),
        ]);
        let slots = HashMap::from([(
            "empathy".to_string(),
            "sorry the latte was cold".to_string(),
        )]);
        assert_eq!(
            t.render(&ctx, &slots).unwrap(),
            "Hi Ana, sorry the latte was cold\n— Sam at Brew Co"
        );
        assert!(t.fixed_text().contains("Hi") && !t.fixed_text().contains("author"));
    }

    #[test]
    fn bad_templates_are_refused_with_line_and_reason() {
        let e = Template::parse("Hello\n{{ slot.x ", vec![slot("x", 1)]).unwrap_err();
        assert!(matches!(e, TemplateError::Syntax { line: 2, .. }), "{e:?}");
        let e =
            Template::parse("Hi\n{{ customer.ssn }} {{ slot.x }}", vec![slot("x", 1)]).unwrap_err();
        assert_eq!(
            e,
            TemplateError::UnknownVariable {
                line: 2,
                name: "customer.ssn".into()
            }
        );
        assert_eq!(
            Template::parse("Thank you for your message.", vec![]).unwrap_err(),
            TemplateError::NoSlot
        );
        assert_eq!(
            Template::parse("{{ slot.a }}", vec![slot("a", 1), slot("b", 1)]).unwrap_err(),
            TemplateError::UnusedSlot("b".into())
        );
        assert_eq!(
            Template::parse("{{ slot.zz }}", vec![slot("a", 1)]).unwrap_err(),
            TemplateError::UnknownVariable {
                line: 1,
                name: "slot.zz".into()
            }
        );
        assert!(matches!(
            Template::parse("{{ slot.A }}", vec![slot("A", 1)]),
            Err(TemplateError::BadSlotName(_))
        ));
    }

    #[test]
    fn rendering_is_bounded() {
        let t = Template::parse(
            "{% for i in range(100000) %}{{ slot.x }}{% endfor %}",
            vec![slot("x", 1)],
        )
        .unwrap();
        let slots = HashMap::from([("x".to_string(), "y".to_string())]);
        assert!(t.render(&HashMap::new(), &slots).is_err(), "fuel runs out");
    }

    #[test]
    fn nothing_outside_the_context_is_reachable() {
        let slots = HashMap::from([("x".to_string(), "y".to_string())]);
        for body in [
            "{% include '/etc/passwd' %}{{ slot.x }}",
            "{% import '/etc/hostname' as h %}{{ slot.x }}",
            "{% extends '../Cargo.toml' %}{{ slot.x }}",
            "{{ env }}{{ slot.x }}",
        ] {
            let refused = match Template::parse(body, vec![slot("x", 1)]) {
                Err(_) => true,
                Ok(t) => t.render(&HashMap::new(), &slots).is_err(),
            };
            assert!(refused, "{body}");
        }
    }

    #[test]
    fn templates_that_fail_only_when_rendered_are_refused_by_their_trial() {
        for body in [
            "Hi {{ author.name }}, {{ slot.empathy|capitalise }}",
            "{% if slot.empathy is shouting %}!{% endif %}{{ slot.empathy }}",
        ] {
            let t = Template::parse(body, vec![slot("empathy", 0)]).expect(body);
            assert!(
                matches!(t.trial(), Err(TemplateError::Unrenderable(_))),
                "{body}"
            );
        }
        let t = Template::parse(
            "Hi {{ author.name }}, {{ slot.empathy|capitalize }}",
            vec![slot("empathy", 0)],
        )
        .unwrap();
        assert_eq!(t.trial(), Ok(()));
    }

    #[test]
    fn words_the_template_writes_as_literals_are_its_fixed_text() {
        let t = Template::parse(
            "{{ \"Sorry for the trouble with your order\" }} {{ slot.note }} {% if slot.note %}{{ 'thanks, it\\'s noted' }}{% endif %}{# not 'this' #}",
            vec![slot("note", 0)],
        )
        .unwrap();
        let fixed = t.fixed_text();
        assert!(
            fixed.contains("Sorry for the trouble with your order"),
            "{fixed}"
        );
        assert!(fixed.contains("thanks, it\\'s noted"), "{fixed}");
        assert!(!fixed.contains("this"), "comments are no text: {fixed}");
    }
}
