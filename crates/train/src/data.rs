//! A synthetic spatial VQA task: coloured shapes on a grid, and questions whose answers need the
//! image and the spatial layout.
//!
//! Everything is deterministic from [`DataConfig::seed`] and rendered in-process (no files);
//! [`Scene::render`] gives the RGB image, [`Scene::ascii`] a text rendering, and images can be
//! saved as PNG by the caller. Splits never share an image (scenes are deduplicated across all
//! splits by content).
//!
//! Question types ([`QuestionType`]):
//!
//! | type | question | answer |
//! |---|---|---|
//! | `color` | "What color is the circle?" (the shape occurs once) | `red` |
//! | `shape_at` | "What is in the top left cell?" | `square` / `nothing` |
//! | `left_of` | "What is left of the blue cross?" | shape / `nothing` |
//! | `right_of` | "What is right of the blue cross?" | shape / `nothing` |
//! | `above` | "What is above the green triangle?" | shape / `nothing` |
//! | `below` | "What is below the green triangle?" | shape / `nothing` |
//! | `count` | "How many yellow shapes are there?" | `0` … `9` |
//! | `exists` | "Is there a red square?" | `yes` / `no` |
//!
//! # Shapes
//!
//! An image is `grid · cell_px` pixels square, RGB; cell `(row, col)` covers pixels
//! `[row · cell_px, (row + 1) · cell_px) × [col · cell_px, (col + 1) · cell_px)`.

use std::collections::{BTreeMap, HashSet};

use image::{Rgb, RgbImage};
use thiserror::Error;

/// Errors of dataset generation.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DataError {
    /// A configuration value is out of range.
    #[error("dataset config: {0}")]
    Config(String),
    /// Not enough distinct scenes exist for the requested split sizes.
    #[error("dataset: only {found} distinct scenes found after {tries} draws, {wanted} wanted (raise grid or objects)")]
    TooFewScenes {
        /// Scenes wanted over all splits.
        wanted: usize,
        /// Distinct scenes found.
        found: usize,
        /// Draws made.
        tries: usize,
    },
}

/// Shape colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
}

/// Shape kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ShapeKind {
    /// A filled square.
    Square,
    /// A filled disc.
    Circle,
    /// A filled triangle, apex up.
    Triangle,
    /// A plus sign.
    Cross,
}

impl Color {
    /// All colours.
    pub const ALL: [Color; 4] = [Color::Red, Color::Green, Color::Blue, Color::Yellow];

    /// The word used in questions and answers.
    pub fn name(self) -> &'static str {
        match self {
            Color::Red => "red",
            Color::Green => "green",
            Color::Blue => "blue",
            Color::Yellow => "yellow",
        }
    }

    /// The RGB value drawn.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [220, 40, 40],
            Color::Green => [40, 170, 60],
            Color::Blue => [40, 70, 220],
            Color::Yellow => [235, 205, 30],
        }
    }
}

impl ShapeKind {
    /// All shapes.
    pub const ALL: [ShapeKind; 4] = [ShapeKind::Square, ShapeKind::Circle, ShapeKind::Triangle, ShapeKind::Cross];

    /// The word used in questions and answers.
    pub fn name(self) -> &'static str {
        match self {
            ShapeKind::Square => "square",
            ShapeKind::Circle => "circle",
            ShapeKind::Triangle => "triangle",
            ShapeKind::Cross => "cross",
        }
    }

    /// One character for text renderings.
    pub fn symbol(self) -> char {
        match self {
            ShapeKind::Square => '#',
            ShapeKind::Circle => 'o',
            ShapeKind::Triangle => '^',
            ShapeKind::Cross => '+',
        }
    }

    /// Whether pixel `(y, x)` of a `size`-pixel cell is inside the shape.
    pub fn covers(self, y: usize, x: usize, size: usize) -> bool {
        let s = size as f64;
        let (fy, fx) = (y as f64 + 0.5, x as f64 + 0.5);
        let margin = s * 0.125;
        let inside = fy >= margin && fy <= s - margin && fx >= margin && fx <= s - margin;
        match self {
            ShapeKind::Square => inside,
            ShapeKind::Circle => {
                let (cy, cx, r) = (s / 2.0, s / 2.0, s * 0.4);
                (fy - cy).powi(2) + (fx - cx).powi(2) <= r * r
            }
            ShapeKind::Triangle => {
                // Apex at the top centre, base along the bottom margin.
                let height = s - 2.0 * margin;
                let t = (fy - margin) / height;
                inside && (fx - s / 2.0).abs() <= t * (s / 2.0 - margin)
            }
            ShapeKind::Cross => {
                let half = (s * 0.14).max(0.5);
                inside && ((fx - s / 2.0).abs() <= half || (fy - s / 2.0).abs() <= half)
            }
        }
    }
}

/// One shape in a scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Object {
    /// Grid row (0 = top).
    pub row: usize,
    /// Grid column (0 = left).
    pub col: usize,
    /// Its colour.
    pub color: Color,
    /// Its shape.
    pub shape: ShapeKind,
}

/// A grid of cells, each empty, holding one shape, or holding clutter (a grey texture that is
/// not a shape: every question treats it as `nothing`); no two shapes share colour and kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scene {
    /// Cells per side.
    pub grid: usize,
    /// The shapes, sorted by position.
    pub objects: Vec<Object>,
    /// Cells `(row, col)` holding clutter, sorted; never a cell with a shape.
    pub clutter: Vec<(usize, usize)>,
}

/// Grey of the clutter texture.
const CLUTTER_RGB: [u8; 3] = [128, 128, 128];

impl Scene {
    /// The object in cell `(row, col)`, if any.
    pub fn at(&self, row: usize, col: usize) -> Option<&Object> {
        self.objects.iter().find(|o| o.row == row && o.col == col)
    }

    /// The object of colour `color` and kind `shape`, if any (at most one exists).
    pub fn find(&self, color: Color, shape: ShapeKind) -> Option<&Object> {
        self.objects.iter().find(|o| o.color == color && o.shape == shape)
    }

    /// Renders the scene: `grid · cell_px` pixels square, black background.
    pub fn render(&self, cell_px: usize) -> RgbImage {
        let side = (self.grid * cell_px) as u32;
        let mut img = RgbImage::from_pixel(side, side, Rgb([0, 0, 0]));
        for &(row, col) in &self.clutter {
            // A checkerboard of 2-pixel squares: texture, not a shape.
            for y in 0..cell_px {
                for x in 0..cell_px {
                    if (y / 2 + x / 2) % 2 == 0 {
                        img.put_pixel((col * cell_px + x) as u32, (row * cell_px + y) as u32, Rgb(CLUTTER_RGB));
                    }
                }
            }
        }
        for o in &self.objects {
            for y in 0..cell_px {
                for x in 0..cell_px {
                    if o.shape.covers(y, x, cell_px) {
                        let px = (o.col * cell_px + x) as u32;
                        let py = (o.row * cell_px + y) as u32;
                        img.put_pixel(px, py, Rgb(o.color.rgb()));
                    }
                }
            }
        }
        img
    }

    /// A text rendering: one line per grid row, two characters per cell (colour initial and
    /// shape symbol, `::` for clutter, `..` when empty).
    pub fn ascii(&self) -> String {
        let mut out = String::new();
        for row in 0..self.grid {
            for col in 0..self.grid {
                if col > 0 {
                    out.push(' ');
                }
                match self.at(row, col) {
                    Some(o) => {
                        out.push(o.color.name().chars().next().unwrap_or('?').to_ascii_uppercase());
                        out.push(o.shape.symbol());
                    }
                    None if self.clutter.contains(&(row, col)) => out.push_str("::"),
                    None => out.push_str(".."),
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The kinds of questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuestionType {
    /// Colour of a shape that occurs once.
    Color,
    /// Shape in a named cell.
    ShapeAt,
    /// Shape in the cell left of an object.
    LeftOf,
    /// Shape in the cell right of an object.
    RightOf,
    /// Shape in the cell above an object.
    Above,
    /// Shape in the cell below an object.
    Below,
    /// Number of shapes of a colour.
    Count,
    /// Whether an object of a colour and kind exists.
    Exists,
}

impl QuestionType {
    /// All question types.
    pub const ALL: [QuestionType; 8] = [
        QuestionType::Color,
        QuestionType::ShapeAt,
        QuestionType::LeftOf,
        QuestionType::RightOf,
        QuestionType::Above,
        QuestionType::Below,
        QuestionType::Count,
        QuestionType::Exists,
    ];

    /// The types whose answer is a neighbour of a named object.
    pub const NEIGHBOURS: [QuestionType; 4] =
        [QuestionType::LeftOf, QuestionType::RightOf, QuestionType::Above, QuestionType::Below];

    /// The type named `name` (as [`QuestionType::name`] writes it).
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|q| q.name() == name)
    }

    /// For a neighbour question, the offset `(rows, cols)` of the cell it asks about.
    pub fn offset(self) -> Option<(isize, isize)> {
        match self {
            QuestionType::LeftOf => Some((0, -1)),
            QuestionType::RightOf => Some((0, 1)),
            QuestionType::Above => Some((-1, 0)),
            QuestionType::Below => Some((1, 0)),
            _ => None,
        }
    }

    /// The relation's words in the question ("left of", "above", …), for neighbour questions.
    fn relation(self) -> &'static str {
        match self {
            QuestionType::LeftOf => "left of",
            QuestionType::RightOf => "right of",
            QuestionType::Above => "above",
            QuestionType::Below => "below",
            _ => "",
        }
    }

    /// Short name (used in tables and metrics).
    pub fn name(self) -> &'static str {
        match self {
            QuestionType::Color => "color",
            QuestionType::ShapeAt => "shape_at",
            QuestionType::LeftOf => "left_of",
            QuestionType::RightOf => "right_of",
            QuestionType::Above => "above",
            QuestionType::Below => "below",
            QuestionType::Count => "count",
            QuestionType::Exists => "exists",
        }
    }
}

/// One question about one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Index of the scene in its split.
    pub scene: usize,
    /// The question.
    pub question: String,
    /// The short answer.
    pub answer: String,
    /// Its type.
    pub qtype: QuestionType,
}

/// A split: scenes and the questions about them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// The scenes (each rendered by [`Scene::render`]).
    pub scenes: Vec<Scene>,
    /// The questions.
    pub examples: Vec<Example>,
}

/// Train, validation and test splits with no image in common.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Splits {
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub val: Split,
    /// Test split.
    pub test: Split,
}

impl Split {
    /// Every question and answer text of the split.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.examples.iter().flat_map(|e| [e.question.as_str(), e.answer.as_str()])
    }
}

/// The word pieces of `texts`, sorted and deduplicated: every run of letters and digits both
/// with a leading space and without (`" red"`, `"red"`), and every other non-space character
/// (`"?"`, `","`). A tokenizer with these pieces on top of the 256 bytes encodes the task's
/// questions and answers one word per token.
pub fn word_pieces<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut pieces = std::collections::BTreeSet::new();
    for text in texts {
        for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            pieces.insert(word.to_string());
            pieces.insert(format!(" {word}"));
        }
        pieces.extend(text.chars().filter(|c| !c.is_alphanumeric() && !c.is_whitespace()).map(String::from));
    }
    pieces.into_iter().collect()
}

/// Dataset sizes and the seed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataConfig {
    /// Cells per side (2 ..= 6).
    pub grid: usize,
    /// Pixels per cell side (4 ..= 64).
    pub cell_px: usize,
    /// Fewest shapes per scene (at least 1).
    pub min_objects: usize,
    /// Most shapes per scene (at most `grid²` and 16, the number of colour × kind pairs).
    pub max_objects: usize,
    /// Clutter cells per scene (grey texture, never a shape), taken from the empty cells.
    pub distractors: usize,
    /// The question types asked, in the order each image cycles through them.
    pub types: Vec<QuestionType>,
    /// Images in the training split.
    pub train_images: usize,
    /// Images in the validation split.
    pub val_images: usize,
    /// Images in the test split.
    pub test_images: usize,
    /// Questions drawn per image (one per type, cycling through the types).
    pub questions_per_image: usize,
    /// Seed of everything.
    pub seed: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            grid: 3,
            cell_px: 8,
            min_objects: 2,
            max_objects: 5,
            distractors: 0,
            types: QuestionType::ALL.to_vec(),
            train_images: 2000,
            val_images: 100,
            test_images: 200,
            questions_per_image: 6,
            seed: 0,
        }
    }
}

/// SplitMix64: a small deterministic generator whose state is one `u64` (saved in training
/// checkpoints).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Shuffles `v` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Names of the cells of a 3×3 grid; larger grids use "row r, column c".
fn cell_name(grid: usize, row: usize, col: usize) -> String {
    if grid == 3 {
        let v = ["top", "middle", "bottom"][row];
        let h = ["left", "center", "right"][col];
        match (row, col) {
            (1, 1) => "center".into(),
            (1, _) => format!("middle {h}"),
            (_, 1) => format!("{v} center"),
            _ => format!("{v} {h}"),
        }
    } else {
        format!("row {}, column {}", row + 1, col + 1)
    }
}

fn random_scene(config: &DataConfig, rng: &mut Rng) -> Scene {
    let cells = config.grid * config.grid;
    let span = config.max_objects - config.min_objects + 1;
    let count = config.min_objects + rng.below(span);
    let mut positions: Vec<usize> = (0..cells).collect();
    rng.shuffle(&mut positions);
    let mut kinds: Vec<(Color, ShapeKind)> =
        Color::ALL.iter().flat_map(|&c| ShapeKind::ALL.iter().map(move |&s| (c, s))).collect();
    rng.shuffle(&mut kinds);
    let mut objects: Vec<Object> = positions
        .iter()
        .zip(&kinds)
        .take(count)
        .map(|(&p, &(color, shape))| Object { row: p / config.grid, col: p % config.grid, color, shape })
        .collect();
    objects.sort();
    let mut clutter: Vec<(usize, usize)> =
        positions.iter().skip(count).take(config.distractors).map(|&p| (p / config.grid, p % config.grid)).collect();
    clutter.sort();
    Scene { grid: config.grid, objects, clutter }
}

/// The cell `offset` away from `(row, col)`, if it is on the grid.
fn neighbour(grid: usize, row: usize, col: usize, offset: (isize, isize)) -> Option<(usize, usize)> {
    let r = row.checked_add_signed(offset.0)?;
    let c = col.checked_add_signed(offset.1)?;
    (r < grid && c < grid).then_some((r, c))
}

/// The shape in `cell`, or `nothing` (empty, clutter or off the grid).
fn cell_answer(scene: &Scene, cell: Option<(usize, usize)>) -> String {
    cell.and_then(|(r, c)| scene.at(r, c)).map_or("nothing", |o| o.shape.name()).to_string()
}

/// One question of type `qtype` about `scene`, or `None` when the scene cannot support it (no
/// shape occurs exactly once, for `color`).
fn question(scene: &Scene, qtype: QuestionType, rng: &mut Rng) -> Option<(String, String)> {
    let pick = |rng: &mut Rng| scene.objects[rng.below(scene.objects.len())];
    match qtype {
        QuestionType::Color => {
            let unique: Vec<ShapeKind> = ShapeKind::ALL
                .into_iter()
                .filter(|&s| scene.objects.iter().filter(|o| o.shape == s).count() == 1)
                .collect();
            if unique.is_empty() {
                return None;
            }
            let s = unique[rng.below(unique.len())];
            let o = scene.objects.iter().find(|o| o.shape == s)?;
            Some((format!("What color is the {}?", s.name()), o.color.name().to_string()))
        }
        QuestionType::ShapeAt => {
            // Half the time an occupied cell, so "nothing" is not the default answer.
            let (row, col) = if rng.below(2) == 0 {
                let o = pick(rng);
                (o.row, o.col)
            } else {
                (rng.below(scene.grid), rng.below(scene.grid))
            };
            let answer = cell_answer(scene, Some((row, col)));
            Some((format!("What is in the {} cell?", cell_name(scene.grid, row, col)), answer))
        }
        QuestionType::LeftOf | QuestionType::RightOf | QuestionType::Above | QuestionType::Below => {
            let offset = qtype.offset()?;
            let next = |o: &Object| neighbour(scene.grid, o.row, o.col, offset);
            // Half the time (when possible) an object whose neighbour cell holds a shape.
            let with_neighbour: Vec<Object> = scene
                .objects
                .iter()
                .copied()
                .filter(|o| next(o).is_some_and(|(r, c)| scene.at(r, c).is_some()))
                .collect();
            let o = if !with_neighbour.is_empty() && rng.below(2) == 0 {
                with_neighbour[rng.below(with_neighbour.len())]
            } else {
                pick(rng)
            };
            let answer = cell_answer(scene, next(&o));
            Some((format!("What is {} the {} {}?", qtype.relation(), o.color.name(), o.shape.name()), answer))
        }
        QuestionType::Count => {
            let c = Color::ALL[rng.below(Color::ALL.len())];
            let n = scene.objects.iter().filter(|o| o.color == c).count();
            Some((format!("How many {} shapes are there?", c.name()), n.to_string()))
        }
        QuestionType::Exists => {
            // Half the time an object that is there, otherwise one that is not.
            let absent_count = 16 - scene.objects.len();
            let (c, s) = if absent_count == 0 || rng.below(2) == 0 {
                let o = pick(rng);
                (o.color, o.shape)
            } else {
                let absent: Vec<(Color, ShapeKind)> = Color::ALL
                    .iter()
                    .flat_map(|&c| ShapeKind::ALL.iter().map(move |&s| (c, s)))
                    .filter(|&(c, s)| scene.find(c, s).is_none())
                    .collect();
                absent[rng.below(absent.len())]
            };
            let yes = scene.find(c, s).is_some();
            Some((format!("Is there a {} {}?", c.name(), s.name()), if yes { "yes" } else { "no" }.to_string()))
        }
    }
}

fn check(config: &DataConfig) -> Result<(), DataError> {
    let bad = |m: String| Err(DataError::Config(m));
    if !(2..=6).contains(&config.grid) {
        return bad(format!("grid must be in 2..=6, got {}", config.grid));
    }
    if !(4..=64).contains(&config.cell_px) {
        return bad(format!("cell_px must be in 4..=64, got {}", config.cell_px));
    }
    let most = (config.grid * config.grid).min(16);
    if config.min_objects == 0 || config.min_objects > config.max_objects || config.max_objects > most {
        return bad(format!(
            "need 1 <= min_objects <= max_objects <= {most}, got {}..={}",
            config.min_objects, config.max_objects
        ));
    }
    if config.max_objects + config.distractors > config.grid * config.grid {
        return bad(format!(
            "{} distractors and up to {} shapes do not fit a {g}x{g} grid",
            config.distractors,
            config.max_objects,
            g = config.grid
        ));
    }
    if config.types.is_empty() {
        return bad("at least one question type must be asked".into());
    }
    if config.train_images == 0 || config.test_images == 0 || config.questions_per_image == 0 {
        return bad("train_images, test_images and questions_per_image must be at least 1".into());
    }
    Ok(())
}

/// Generates the three splits from `config.seed`.
///
/// Scenes are drawn from one stream and deduplicated across all splits, then dealt to train,
/// validation and test in that order; each image gets `questions_per_image` questions cycling
/// through the question types from a random offset.
pub fn generate(config: &DataConfig) -> Result<Splits, DataError> {
    check(config)?;
    let mut rng = Rng(config.seed ^ 0x5EED_DA7A);
    let wanted = config.train_images + config.val_images + config.test_images;
    let mut seen = HashSet::new();
    let mut scenes = Vec::with_capacity(wanted);
    let max_tries = wanted * 50 + 1000;
    let mut tries = 0;
    while scenes.len() < wanted {
        if tries == max_tries {
            return Err(DataError::TooFewScenes { wanted, found: scenes.len(), tries });
        }
        tries += 1;
        let scene = random_scene(config, &mut rng);
        if seen.insert(scene.clone()) {
            scenes.push(scene);
        }
    }
    let mut deal = |scenes: Vec<Scene>| {
        let mut examples = Vec::new();
        for (i, scene) in scenes.iter().enumerate() {
            let types = &config.types;
            let offset = rng.below(types.len());
            let mut asked = 0;
            let mut k = 0;
            while asked < config.questions_per_image && k < config.questions_per_image + types.len() {
                let qtype = types[(offset + k) % types.len()];
                k += 1;
                if let Some((question, answer)) = question(scene, qtype, &mut rng) {
                    examples.push(Example { scene: i, question, answer, qtype });
                    asked += 1;
                }
            }
        }
        Split { scenes, examples }
    };
    let test = scenes.split_off(config.train_images + config.val_images);
    let val = scenes.split_off(config.train_images);
    Ok(Splits { train: deal(scenes), val: deal(val), test: deal(test) })
}

/// Accuracy of always answering the most frequent training answer of each question type.
#[derive(Clone, Debug, PartialEq)]
pub struct Baseline {
    /// Per question type: (the majority answer, accuracy on the evaluated split, questions).
    pub per_type: BTreeMap<QuestionType, (String, f64, usize)>,
    /// Accuracy over all questions of the evaluated split.
    pub overall: f64,
}

/// The majority-answer baseline: per question type, the most frequent answer in `train`
/// (ties broken by the answer text), scored on `eval`.
pub fn majority_baseline(train: &Split, eval: &Split) -> Baseline {
    let mut counts: BTreeMap<QuestionType, BTreeMap<&str, usize>> = BTreeMap::new();
    for e in &train.examples {
        *counts.entry(e.qtype).or_default().entry(e.answer.as_str()).or_default() += 1;
    }
    let majority: BTreeMap<QuestionType, String> = counts
        .into_iter()
        .filter_map(|(t, c)| {
            c.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0))).map(|(a, _)| (t, a.to_string()))
        })
        .collect();
    let mut per_type = BTreeMap::new();
    let mut right = 0;
    for t in QuestionType::ALL {
        let of_type: Vec<&Example> = eval.examples.iter().filter(|e| e.qtype == t).collect();
        if of_type.is_empty() {
            continue;
        }
        let answer = majority.get(&t).cloned().unwrap_or_default();
        let hits = of_type.iter().filter(|e| e.answer == answer).count();
        right += hits;
        per_type.insert(t, (answer, hits as f64 / of_type.len() as f64, of_type.len()));
    }
    let overall = if eval.examples.is_empty() { 0.0 } else { right as f64 / eval.examples.len() as f64 };
    Baseline { per_type, overall }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DataConfig {
        DataConfig { train_images: 60, val_images: 10, test_images: 20, ..DataConfig::default() }
    }

    #[test]
    fn generation_is_deterministic_and_seeded() {
        let a = generate(&small()).unwrap();
        assert_eq!(a, generate(&small()).unwrap());
        let b = generate(&DataConfig { seed: 1, ..small() }).unwrap();
        assert_ne!(a.train.scenes, b.train.scenes);
        assert_eq!(a.train.scenes.len(), 60);
        assert_eq!(a.val.scenes.len(), 10);
        assert_eq!(a.test.scenes.len(), 20);
        assert_eq!(a.train.examples.len(), 60 * 6);
    }

    #[test]
    fn distractors_and_question_types_follow_the_config() {
        let cfg = DataConfig { distractors: 2, types: vec![QuestionType::Below, QuestionType::Count], ..small() };
        let s = generate(&cfg).unwrap();
        for scene in &s.train.scenes {
            assert_eq!(scene.clutter.len(), 2);
            assert!(scene.clutter.iter().all(|&(r, c)| scene.at(r, c).is_none()));
        }
        assert!(s.train.examples.iter().all(|e| cfg.types.contains(&e.qtype)));
        assert!(s.train.examples.iter().any(|e| e.qtype == QuestionType::Below));
        assert!(generate(&DataConfig { distractors: 5, ..small() }).is_err(), "5 shapes + 5 clutter > 9 cells");
        assert!(generate(&DataConfig { types: vec![], ..small() }).is_err());
    }

    #[test]
    fn splits_share_no_image() {
        let s = generate(&small()).unwrap();
        let train: HashSet<_> = s.train.scenes.iter().map(|x| x.render(8).into_raw()).collect();
        for scene in s.val.scenes.iter().chain(&s.test.scenes) {
            assert!(!train.contains(&scene.render(8).into_raw()));
        }
    }

    #[test]
    fn answers_follow_from_the_scene() {
        // Hand-made scene: red square top left, blue circle top center, green cross middle center.
        let scene = Scene {
            grid: 3,
            objects: vec![
                Object { row: 0, col: 0, color: Color::Red, shape: ShapeKind::Square },
                Object { row: 0, col: 1, color: Color::Blue, shape: ShapeKind::Circle },
                Object { row: 1, col: 1, color: Color::Green, shape: ShapeKind::Cross },
            ],
            clutter: vec![(2, 2)],
        };
        assert_eq!(scene.ascii(), "R# Bo ..\n.. G+ ..\n.. .. ::\n");
        assert_eq!(cell_answer(&scene, Some((0, 0))), "square");
        assert_eq!(cell_answer(&scene, Some((2, 2))), "nothing", "clutter is not a shape");
        assert_eq!(neighbour(3, 0, 0, (0, -1)), None);
        assert_eq!(neighbour(3, 2, 1, (0, 1)), Some((2, 2)));
        assert_eq!(cell_name(3, 0, 0), "top left");
        assert_eq!(cell_name(3, 1, 1), "center");
        assert_eq!(cell_name(3, 2, 1), "bottom center");
        let mut rng = Rng(3);
        for _ in 0..50 {
            let (q, a) = question(&scene, QuestionType::LeftOf, &mut rng).unwrap();
            let want = match q.as_str() {
                "What is left of the blue circle?" => "square",
                _ => "nothing",
            };
            assert_eq!(a, want, "{q}");
            let (q, a) = question(&scene, QuestionType::Above, &mut rng).unwrap();
            let want = if q == "What is above the green cross?" { "circle" } else { "nothing" };
            assert_eq!(a, want, "{q}");
            let (q, a) = question(&scene, QuestionType::RightOf, &mut rng).unwrap();
            let want = if q == "What is right of the red square?" { "circle" } else { "nothing" };
            assert_eq!(a, want, "{q}");
            let (q, a) = question(&scene, QuestionType::Below, &mut rng).unwrap();
            let want = if q == "What is below the blue circle?" { "cross" } else { "nothing" };
            assert_eq!(a, want, "{q}");
            let (q, a) = question(&scene, QuestionType::Color, &mut rng).unwrap();
            let want = match q.as_str() {
                "What color is the square?" => "red",
                "What color is the circle?" => "blue",
                _ => "green",
            };
            assert_eq!(a, want, "{q}");
        }
        // Rendering: the red square fills its cell's inside, the empty cells stay black.
        let img = scene.render(8);
        assert_eq!(img.get_pixel(4, 4).0, Color::Red.rgb());
        assert_eq!(img.get_pixel(20, 4).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(12, 4).0, Color::Blue.rgb());
        assert_eq!(img.get_pixel(16, 16).0, CLUTTER_RGB);
        assert_eq!(img.get_pixel(18, 16).0, [0, 0, 0]);
    }

    #[test]
    fn word_pieces_cover_words_with_and_without_space() {
        let p = word_pieces(["What is left of the red circle?", "nothing"]);
        for w in ["What", " What", " red", "red", " circle", "?", " nothing", "nothing"] {
            assert!(p.contains(&w.to_string()), "{w:?} missing from {p:?}");
        }
        assert!(!p.iter().any(|w| w.contains('?') && w.len() > 1));
        let mut sorted = p.clone();
        sorted.dedup();
        assert_eq!(sorted, p);
    }

    #[test]
    fn baseline_is_per_type_majority() {
        let s = generate(&small()).unwrap();
        let b = majority_baseline(&s.train, &s.test);
        assert_eq!(b.per_type.len(), QuestionType::ALL.len());
        // exists: "no" or "yes"; shape_at: "nothing" dominates sparse grids.
        assert!(["yes", "no"].contains(&b.per_type[&QuestionType::Exists].0.as_str()));
        // Balanced question choice keeps every type's majority answer well below certainty.
        for (t, (answer, acc, _)) in &b.per_type {
            assert!(*acc < 0.65, "{t:?}: majority answer {answer} already scores {acc}");
        }
        assert!(b.overall > 0.0 && b.overall < 0.5, "{}", b.overall);
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(generate(&DataConfig { grid: 1, ..small() }).is_err());
        assert!(generate(&DataConfig { max_objects: 10, ..small() }).is_err());
        // 2x2 grid with one shape: 4 cells x 16 kinds = 64 distinct scenes < 90.
        let err = generate(&DataConfig { grid: 2, min_objects: 1, max_objects: 1, ..small() });
        assert!(matches!(err, Err(DataError::TooFewScenes { .. })), "{err:?}");
    }
}
