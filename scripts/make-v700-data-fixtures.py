"""Goldens for VisualRWKV-7 v7.00's data format, from the official `src/dataset.py`.

The preprocessing functions (`process_image_tokens_in_conversations`,
`process_tokens_in_conversations`, `_add_speaker_and_signal`, `tokenize_with_image_token`,
`mask_targets`, `pad_to_max_len`, `preprocess`) and constants are taken from the official
`VisualRWKV-v7/v7.00/src/dataset.py` by parsing that file and executing only those definitions;
the tokenizer is the `rwkv` package's TRIE_TOKENIZER on `rwkv_vocab_v20230424.txt` (the vocabulary
v7.00's train.py loads). `MyDataset.__getitem__`'s per-sample steps are repeated here in order:
a string `image` becomes a one-element list; with an `image` key the image tokens are processed,
otherwise the text only; `preprocess` with pad_token_id 0; the id is `sample_id`, else `id`.

Writes tests/fixtures/v700/v700_dev_golden.jsonl: per sample and num_token_per_image ∈ {16, 4}:
`id`, `num_token_per_image`, `input_text`, unpadded `input_ids`/`labels`
(do_pad_to_max_length=False) and `padded_ids`/`padded_labels` at ctx_len 40.

    python scripts/make-v700-data-fixtures.py /path/to/VisualRWKV-v7/v7.00/src/dataset.py
"""
import ast, copy, json, os, re, sys
import torch
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER
import rwkv

NAMES = {"process_image_tokens_in_conversations", "process_tokens_in_conversations", "_add_speaker_and_signal",
         "tokenize_with_image_token", "mask_targets", "pad_to_max_len", "preprocess"}
CONSTS = {"IGNORE_INDEX", "IMAGE_TOKEN_INDEX", "DEFAULT_IMAGE_TOKEN", "STOP_TOKEN_INDEX", "DEFAULT_STOP_TOKEN"}
tree = ast.parse(open(sys.argv[1]).read())
body = [n for n in tree.body if (isinstance(n, ast.FunctionDef) and n.name in NAMES)
        or (isinstance(n, ast.Assign) and {t.id for t in n.targets if isinstance(t, ast.Name)} & CONSTS)]
assert len(body) == len(NAMES) + len(CONSTS), [getattr(n, "name", None) for n in body]
from typing import Dict, List, Sequence, Any
scope = {"torch": torch, "re": re, "copy": copy, "Dict": Dict, "List": List, "Sequence": Sequence, "Any": Any}
exec(compile(ast.Module(body=body, type_ignores=[]), sys.argv[1], "exec"), scope)

tok = TRIE_TOKENIZER(os.path.join(os.path.dirname(rwkv.__file__), "rwkv_vocab_v20230424.txt"))
samples = json.load(open("tests/fixtures/v700/v700_dev.json"))
with open("tests/fixtures/v700/v700_dev_golden.jsonl", "w") as out:
    for sample in samples:
        for nt in (16, 4):
            s = copy.deepcopy(sample)
            has_image = "image" in s
            if has_image:
                if isinstance(s["image"], str):
                    s["image"] = [s["image"]]
                conv = scope["process_image_tokens_in_conversations"](copy.deepcopy(s["conversations"]), num_image_paths=len(s["image"]))
            else:
                conv = scope["process_tokens_in_conversations"](copy.deepcopy(s["conversations"]))
            plain = scope["preprocess"](copy.deepcopy(conv), tok, has_image=has_image, ctx_len=40,
                                        num_token_per_image=nt, pad_token_id=0, do_pad_to_max_length=False)
            padded = scope["preprocess"](copy.deepcopy(conv), tok, has_image=has_image, ctx_len=40,
                                         num_token_per_image=nt, pad_token_id=0)
            sid = s["sample_id"] if "sample_id" in s else s["id"]
            out.write(json.dumps({
                "id": str(sid), "num_token_per_image": nt, "input_text": plain["input_text"],
                "input_ids": plain["input_ids"].tolist(), "labels": plain["labels"].tolist(),
                "padded_ids": padded["input_ids"].tolist(), "padded_labels": padded["labels"].tolist(),
            }, ensure_ascii=False) + "\n")
print("wrote", 2 * len(samples), "cases")
