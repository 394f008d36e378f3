//! The EvalAI answer processor, as the official TextVQA scorer (`m4c_evaluator.py`) applies it to
//! predictions and to the human answers before the VQA soft accuracy.
//!
//! In order: lower-case, drop `,` and `?`, split `'s` into ` 's`, strip; turn newlines and tabs
//! into spaces; punctuation (each of `; / [ ] " { } ( ) = + \ _ - > < @ ` ! ,` is deleted when it
//! touches a space somewhere in the answer, else replaced by a space); delete periods not
//! followed by a digit (the first 32: the official call passes `re.UNICODE` where `count` goes);
//! then per word: number words to digits (`none`/`zero` → `0` … `ten` → `10`), articles
//! (`a`, `an`, `the`) dropped, contractions restored (`dont` → `don't`).

/// Contractions without their apostrophe → with it.
#[rustfmt::skip]
const CONTRACTIONS: &[(&str, &str)] = &[
    ("aint", "ain't"), ("arent", "aren't"), ("cant", "can't"), ("couldve", "could've"), ("couldnt", "couldn't"),
    ("couldn'tve", "couldn't've"), ("couldnt've", "couldn't've"), ("didnt", "didn't"), ("doesnt", "doesn't"),
    ("dont", "don't"), ("hadnt", "hadn't"), ("hadnt've", "hadn't've"), ("hadn'tve", "hadn't've"), ("hasnt", "hasn't"),
    ("havent", "haven't"), ("hed", "he'd"), ("hed've", "he'd've"), ("he'dve", "he'd've"), ("hes", "he's"),
    ("howd", "how'd"), ("howll", "how'll"), ("hows", "how's"), ("Id've", "I'd've"), ("I'dve", "I'd've"),
    ("Im", "I'm"), ("Ive", "I've"), ("isnt", "isn't"), ("itd", "it'd"), ("itd've", "it'd've"), ("it'dve", "it'd've"),
    ("itll", "it'll"), ("let's", "let's"), ("maam", "ma'am"), ("mightnt", "mightn't"), ("mightnt've", "mightn't've"),
    ("mightn'tve", "mightn't've"), ("mightve", "might've"), ("mustnt", "mustn't"), ("mustve", "must've"),
    ("neednt", "needn't"), ("notve", "not've"), ("oclock", "o'clock"), ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"), ("'ows'at", "'ow's'at"), ("'ow'sat", "'ow's'at"), ("shant", "shan't"),
    ("shed've", "she'd've"), ("she'dve", "she'd've"), ("she's", "she's"), ("shouldve", "should've"),
    ("shouldnt", "shouldn't"), ("shouldnt've", "shouldn't've"), ("shouldn'tve", "shouldn't've"),
    ("somebody'd", "somebodyd"), ("somebodyd've", "somebody'd've"), ("somebody'dve", "somebody'd've"),
    ("somebodyll", "somebody'll"), ("somebodys", "somebody's"), ("someoned", "someone'd"),
    ("someoned've", "someone'd've"), ("someone'dve", "someone'd've"), ("someonell", "someone'll"),
    ("someones", "someone's"), ("somethingd", "something'd"), ("somethingd've", "something'd've"),
    ("something'dve", "something'd've"), ("somethingll", "something'll"), ("thats", "that's"), ("thered", "there'd"),
    ("thered've", "there'd've"), ("there'dve", "there'd've"), ("therere", "there're"), ("theres", "there's"),
    ("theyd", "they'd"), ("theyd've", "they'd've"), ("they'dve", "they'd've"), ("theyll", "they'll"),
    ("theyre", "they're"), ("theyve", "they've"), ("twas", "'twas"), ("wasnt", "wasn't"), ("wed've", "we'd've"),
    ("we'dve", "we'd've"), ("weve", "we've"), ("werent", "weren't"), ("whatll", "what'll"), ("whatre", "what're"),
    ("whats", "what's"), ("whatve", "what've"), ("whens", "when's"), ("whered", "where'd"), ("wheres", "where's"),
    ("whereve", "where've"), ("whod", "who'd"), ("whod've", "who'd've"), ("who'dve", "who'd've"), ("wholl", "who'll"),
    ("whos", "who's"), ("whove", "who've"), ("whyll", "why'll"), ("whyre", "why're"), ("whys", "why's"),
    ("wont", "won't"), ("wouldve", "would've"), ("wouldnt", "wouldn't"), ("wouldnt've", "wouldn't've"),
    ("wouldn'tve", "wouldn't've"), ("yall", "y'all"), ("yall'll", "y'all'll"), ("y'allll", "y'all'll"),
    ("yall'd've", "y'all'd've"), ("y'alld've", "y'all'd've"), ("y'all'dve", "y'all'd've"), ("youd", "you'd"),
    ("youd've", "you'd've"), ("you'dve", "you'd've"), ("youll", "you'll"), ("youre", "you're"), ("youve", "you've"),
];

/// Number words → digits.
#[rustfmt::skip]
const NUMBERS: &[(&str, &str)] = &[
    ("none", "0"), ("zero", "0"), ("one", "1"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"),
    ("six", "6"), ("seven", "7"), ("eight", "8"), ("nine", "9"), ("ten", "10"),
];

/// Dropped words.
const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// Punctuation handled by [`process_punctuation`], in the official order.
const PUNCTUATION: [&str; 21] =
    [";", "/", "[", "]", "\"", "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"];

/// The official first step: lower-case, drop `,` and `?`, `'s` → ` 's`, strip.
pub fn word_tokenize(word: &str) -> String {
    word.to_lowercase().replace([',', '?'], "").replace("'s", " 's").trim().to_string()
}

/// Whether a digit, one or more commas and a digit follow each other somewhere (`\d,+\d`).
fn has_digit_commas_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len()).any(|i| {
        if !chars[i].is_ascii_digit() {
            return false;
        }
        let mut j = i + 1;
        while j < chars.len() && chars[j] == ',' {
            j += 1;
        }
        j > i + 1 && j < chars.len() && chars[j].is_ascii_digit()
    })
}

/// Punctuation: deleted when it touches a space anywhere in `text` (or the text has a
/// digit-comma-digit run), otherwise replaced by a space; then periods not followed by a digit
/// are deleted (at most 32 of them, as the official call does).
pub fn process_punctuation(text: &str) -> String {
    let comma = has_digit_commas_digit(text);
    let mut out = text.to_string();
    for p in PUNCTUATION {
        let touches = text.contains(&format!("{p} ")) || text.contains(&format!(" {p}"));
        out = out.replace(p, if touches || comma { "" } else { " " });
    }
    let chars: Vec<char> = out.chars().collect();
    let mut stripped = String::with_capacity(out.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        let before_digit = chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c == '.' && !before_digit && removed < 32 {
            removed += 1;
            continue;
        }
        stripped.push(c);
    }
    stripped
}

/// Per word (after lower-casing and splitting on whitespace): number words to digits, articles
/// dropped, contractions restored; joined by single spaces.
pub fn process_digit_article(text: &str) -> String {
    let lookup = |table: &[(&str, &'static str)], w: &str| table.iter().find(|(k, _)| *k == w).map(|(_, v)| *v);
    let lower = text.to_lowercase();
    let words: Vec<String> = lower
        .split_whitespace()
        .map(|w| lookup(NUMBERS, w).unwrap_or(w))
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| lookup(CONTRACTIONS, w).unwrap_or(w).to_string())
        .collect();
    words.join(" ")
}

/// The whole EvalAI processor (see the module docs).
pub fn normalize_answer(answer: &str) -> String {
    let item = word_tokenize(answer);
    let item = item.replace(['\n', '\t'], " ");
    process_digit_article(&process_punctuation(item.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule() {
        // Lower case, `?` and `,` dropped, strip.
        assert_eq!(normalize_answer("  Yes? "), "yes");
        // Number words and articles.
        assert_eq!(normalize_answer("Two dogs"), "2 dogs");
        assert_eq!(normalize_answer("the red one"), "red 1");
        assert_eq!(normalize_answer("None"), "0");
        // Contractions restored.
        assert_eq!(normalize_answer("dont know"), "don't know");
        // `'s` split off.
        assert_eq!(normalize_answer("man's hat"), "man 's hat");
        // Punctuation touching a space is deleted, else replaced by a space.
        assert_eq!(normalize_answer("red - white"), "red white");
        assert_eq!(normalize_answer("red-white"), "red white");
        assert_eq!(normalize_answer("(left)"), "left");
        assert_eq!(normalize_answer("t-shirt (blue)"), "t shirt blue");
        // Periods: dropped unless a digit follows.
        assert_eq!(normalize_answer("3.5 inches."), "3.5 inches");
        assert_eq!(normalize_answer("u.s.a."), "usa");
        // Newlines and tabs are spaces.
        assert_eq!(normalize_answer("a\ncat\tsat"), "cat sat");
        // Empty stays empty.
        assert_eq!(normalize_answer(""), "");
    }

    #[test]
    fn only_32_periods_are_removed() {
        let text = ".".repeat(40);
        assert_eq!(process_punctuation(&text), ".".repeat(8));
    }

    #[test]
    fn digit_comma_digit_deletes_all_punctuation() {
        // The comma rule cannot fire after word_tokenize (commas are gone), only on raw input.
        assert_eq!(process_punctuation("1,000 a-b"), "1000 ab");
        assert_eq!(process_punctuation("a-b"), "a b");
    }
}
