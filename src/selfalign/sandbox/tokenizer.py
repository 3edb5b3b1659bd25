"""The sandbox model's character-level tokenizer: one token per character (printable ASCII and newline) plus
``<pad>`` (id 0), ``<s>`` (id 1), ``</s>`` (id 2), ``<unk>`` (id 3); 100 tokens. Plain ``tokenizer(text)`` adds no
BOS and no EOS, exactly as the model was trained (inputs start with the first character of the prompt; every
training completion ends with ``</s>``)."""

from __future__ import annotations

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
#: Positions the model supports (sandbox texts are under ~130 characters for 2 digits, 4 terms).
MAX_LENGTH = 256


def build_char_tokenizer():
    """A character-level ``PreTrainedTokenizerFast``: WordLevel over single characters (printable
    ASCII 32-126 and ``\\n``), every character split by the pre-tokenizer, special tokens
    ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3 (matched as whole strings in text), decoder
    that concatenates. No BOS/EOS is added by ``tokenizer(text)``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(list(SPECIAL_TOKENS) + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_LENGTH,
    )
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    return tok
