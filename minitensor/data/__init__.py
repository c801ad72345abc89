"""minitensor.data: datasets, the DataLoader, MNIST, number-word datasets, vocabularies."""
from .dataloader import BatchSampler, DataLoader, RandomSampler, SequentialSampler, default_collate
from .dataset import ConcatDataset, Dataset, Subset, TensorDataset, random_split
from .distributed import DistributedSampler
from .idx import read_idx, write_idx
from .mnist import MNIST
from .number_words import LANGUAGES, LanguageOfNumberWords, NumberWords, number_to_words, sample_numbers
from .vocab import END, PAD, SPECIALS, START, UNK, Vocab, char_tokenize, pad_batch, word_tokenize

__all__ = [
    "Dataset", "TensorDataset", "Subset", "ConcatDataset", "random_split", "DataLoader", "default_collate",
    "SequentialSampler", "RandomSampler", "BatchSampler", "DistributedSampler", "MNIST", "read_idx", "write_idx", "NumberWords",
    "LanguageOfNumberWords", "LANGUAGES", "number_to_words", "sample_numbers", "Vocab", "word_tokenize",
    "char_tokenize", "pad_batch", "PAD", "UNK", "START", "END", "SPECIALS",
]
