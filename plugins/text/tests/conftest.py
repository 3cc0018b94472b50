import pytest

pytest_plugins = ["sigerlm_testkit"]


@pytest.fixture(scope="session")
def shared_bpe():
    """A BPE trained on every text file of ../shared/data (about two seconds)."""
    from sigerlm.paths import data_dir
    from sigerlm_text.corpus_text import iter_documents
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    return BPETokenizer.train(iter_documents([data_dir()]), vocab_size=8000)
