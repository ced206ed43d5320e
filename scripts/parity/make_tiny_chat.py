"""Writes tests/fixtures/tiny-chat: the tiny-llama random weights with a small
byte-level BPE tokenizer (256 bytes + " A", " B", a few words, ChatML specials) and a
ChatML chat template, so the server and CLI can run end to end in milliseconds.
Pure Python, no dependencies: python3 scripts/parity/make_tiny_chat.py"""
import json
import pathlib
import shutil

root = pathlib.Path(__file__).resolve().parents[2]
src = root / "tests/fixtures/parity/tiny-llama"
dst = root / "tests/fixtures/tiny-chat"
dst.mkdir(parents=True, exist_ok=True)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


byte_tokens = [bytes_to_unicode()[b] for b in range(256)]
vocab = {t: i for i, t in enumerate(byte_tokens)}
merges = [("Ġ", "A"), ("Ġ", "B"), ("t", "h"), ("th", "e"), ("Ġ", "the"), ("i", "n"), ("e", "r"), ("o", "n")]
for a, b in merges:
    vocab[a + b] = len(vocab)
specials = ["<|im_start|>", "<|im_end|>"]
added = []
for s in specials:
    vocab[s] = len(vocab)
    added.append({"id": vocab[s], "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True})
assert len(vocab) <= 320, len(vocab)
tokenizer = {
    "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "post_processor": None,
    "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
}
(dst / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=1))
chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
(dst / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "bos_token": None, "chat_template": chatml}, indent=1))
cfg = json.loads((src / "config.json").read_text())
cfg["eos_token_id"] = vocab["<|im_end|>"]
cfg["bos_token_id"] = vocab["<|im_start|>"]
(dst / "config.json").write_text(json.dumps(cfg, indent=2))
shutil.copy(src / "model.safetensors", dst / "model.safetensors")
print("wrote", dst, "vocab", len(vocab))
