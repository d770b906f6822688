"""The one Seg-Zero user prompt, byte-identical to the released checkpoints' training prompt."""

ANSWER_EXAMPLE = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"

# Sentences are joined with no space, exactly as in the released training code.
PROMPT_TEMPLATE = (
    "Please find '{question}' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox and points of two largest inscribed circles inside the interested object"
    " in JSON format."
    "i.e., <think> thinking process here </think><answer>{answer}</answer>"
)


def normalize_question(query: str) -> str:
    """Lower-case and strip '.' from both ends, as the released code did at training time."""
    return query.lower().strip(".")


def build_prompt(query: str) -> str:
    """Return the user text for `query` (the chat template is applied by the reasoner)."""
    return PROMPT_TEMPLATE.format(question=normalize_question(query), answer=ANSWER_EXAMPLE)
