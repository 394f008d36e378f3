//! Worked prompts (docs/model.md §3) reproduce the official code's exact token ids, and the label rules hold.

use visualrwkv_prompt::*;
use visualrwkv_tokenizer::Tokenizer;

const Q: &str = "What is the man holding?\nAnswer the question using a single word or phrase.";
const IMG: i64 = IMAGE_TOKEN;
const ANSWER_TAIL: [i64; 10] = [40301, 22590, 57009, 40085, 332, 47289, 32497, 4715, 46808, 47];

fn prompt(strategy: &str) -> Prompt {
    let conv = Conversation::question(Q);
    build(&conv, by_name(strategy).unwrap().as_ref(), Tokenizer::world(), true, true).unwrap()
}

#[test]
fn image_first() {
    let mut want = vec![24281, 59, 33, IMG, 11, 24326, 4600, 22590, 22068, 51932, 64, 11];
    want.extend(ANSWER_TAIL);
    want.extend([261, 5585, 41693, 59]);
    let p = prompt("first");
    assert_eq!(p.tokens, want);
    assert_eq!((p.image_position(), p.tokens.len() - 1 + 577), (Some(3), 602));
}

#[test]
fn image_last() {
    let mut want = vec![24281, 59, 30031, 4600, 22590, 22068, 51932, 64, 11];
    want.extend(ANSWER_TAIL);
    want.extend([11, IMG, 261, 5585, 41693, 59]);
    let p = prompt("last");
    assert_eq!(p.tokens, want);
    assert_eq!((p.image_position(), p.tokens.len() - 1 + 577), (Some(20), 601));
}

#[test]
fn sandwich_v6() {
    let mut want =
        vec![24281, 59, 30031, 4600, 22590, 22068, 51932, 64, 11, IMG, 11, 24326, 4600, 22590, 22068, 51932, 64, 11];
    want.extend(ANSWER_TAIL);
    want.extend([261, 5585, 41693, 59]);
    let p = prompt("sandwich");
    assert_eq!(p.tokens, want);
    assert_eq!((p.image_position(), p.tokens.len() - 1 + 577), (Some(9), 608));
    assert!(p.labels.iter().all(|&l| l == IGNORE_INDEX), "nothing is trained at inference");
}

#[test]
fn sandwich_repeat_v5_puts_the_same_question_on_both_sides() {
    let p = prompt("sandwich-repeat");
    let at = p.image_position().unwrap();
    let (before, after) = p.split();
    // "User: Q\n" <image> "\nQ\n\nAssistant:" — the question's tokens appear on both sides.
    assert_eq!(&before[..2], &[24281, 59]);
    assert_eq!(before.len(), at);
    let tail: Vec<u32> = ANSWER_TAIL.iter().map(|&t| t as u32).collect();
    assert!(before.windows(10).any(|w| w == tail.as_slice()));
    assert!(after.windows(10).any(|w| w == tail.as_slice()));
}

#[test]
fn training_example_turns_and_labels() {
    let conv = Conversation::default()
        .push(Role::User, &format!("<image>\n{Q}"))
        .push(Role::Assistant, "Umbrella")
        .push(Role::User, "What color is it?")
        .push(Role::Assistant, "Red");
    let p = build(&conv, &ImageFirst, Tokenizer::world(), true, false).unwrap();
    assert_eq!(p.turn_lengths, vec![23, 7, 8, 5]);
    let trained: Vec<i64> = p.labels.iter().copied().filter(|&l| l != IGNORE_INDEX).collect();
    let text = Tokenizer::world().decode(&trained.iter().map(|&t| t as u32).collect::<Vec<_>>()).unwrap();
    assert_eq!(text, " Umbrella\n\n Red\n\n");
    // The three "Assistant:" tokens of each answer are not trained.
    assert_eq!(&p.tokens[23..26], &[5585, 41693, 59]);
    assert_eq!(&p.labels[23..26], &[IGNORE_INDEX; 3]);
    assert_eq!(p.labels[26], p.tokens[26]);
}

#[test]
fn multi_turn_sandwich_collects_every_question() {
    let conv = Conversation::default()
        .push(Role::User, &format!("<image>\n{Q}"))
        .push(Role::Assistant, "Umbrella")
        .push(Role::User, "What color is it?");
    let p = build(&conv, &Sandwich, Tokenizer::world(), true, true).unwrap();
    let (before, _) = p.split();
    let text = Tokenizer::world().decode(&before).unwrap();
    assert_eq!(text, "User: What is the man holding?\nWhat color is it?\n");
}

#[test]
fn normalisation() {
    assert_eq!(collapse_newlines("a\n\nb\n \n\t\nc\n d"), "a\nb\nc\n d");
    assert_eq!(clean("  <image>\n\nHi\n\n\nthere  "), "Hi\nthere");
}

#[test]
fn bad_conversations_are_errors() {
    let t = Tokenizer::world();
    let no_image = Conversation::default().push(Role::User, "Hello");
    assert_eq!(build(&no_image, &Sandwich, t, true, true), Err(PromptError::NoPlaceholder));
    assert!(build(&no_image, &Sandwich, t, false, true).is_ok(), "text-only prompts are fine without an image");
    let two = Conversation::default().push(Role::User, "<image> and <image>");
    assert_eq!(build(&two, &ImageFirst, t, true, true), Err(PromptError::TooManyImages(2)));
    let unexpected = Conversation::question("hi");
    assert_eq!(build(&unexpected, &ImageFirst, t, false, true), Err(PromptError::TooManyImages(1)));
    assert_eq!(build(&Conversation::default(), &ImageFirst, t, false, true), Err(PromptError::Empty));
    let answer = Conversation::default().push(Role::User, "hi").push(Role::Assistant, "<image>");
    assert_eq!(build(&answer, &ImageFirst, t, true, true), Err(PromptError::ImageInAnswer(1)));
    let roles = Conversation::default().push(Role::User, "<image> hi").push(Role::User, "again");
    assert_eq!(build(&roles, &ImageFirst, t, true, true), Err(PromptError::Roles(1)));
}

#[test]
fn the_assistant_prefix_is_masked_whatever_the_tokenizer() {
    // Byte-level ids (id = byte + 1): "Assistant:" is 10 tokens, all masked; " red\n\n" trained.
    let tok = Tokenizer::world_bytes();
    let conv = Conversation::question("Q?").push(Role::Assistant, "red");
    let p = build(&conv, &ImageFirst, tok, true, false).unwrap();
    let answer_start = p.turn_lengths[0];
    let want_masked = vec![IGNORE_INDEX; 10];
    assert_eq!(&p.labels[answer_start..answer_start + 10], want_masked.as_slice());
    let trained: Vec<u8> = p.labels[answer_start + 10..].iter().map(|&l| (l - 1) as u8).collect();
    assert_eq!(trained, b" red\n\n");
}

#[test]
fn the_prompt_text_is_the_official_input_text_and_encodes_to_the_tokens() {
    let want = [
        (
            "first",
            "User: <image>\nWhat is the man holding?\nAnswer the question using a single word or phrase.\n\nAssistant:",
        ),
        (
            "last",
            "User: What is the man holding?\nAnswer the question using a single word or phrase.\n<image>\n\nAssistant:",
        ),
        (
            "sandwich",
            "User: What is the man holding?\n<image>\nWhat is the man holding?\nAnswer the question using a single word or phrase.\n\nAssistant:",
        ),
    ];
    for (strategy, text) in want {
        let p = prompt(strategy);
        assert_eq!(p.text, text, "{strategy}");
        assert_eq!(tokenize_with_image(Tokenizer::world(), &p.text), p.tokens, "{strategy}");
    }
}
