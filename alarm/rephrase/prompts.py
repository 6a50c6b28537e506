"""Prompt texts of the self-generation / self-rephrasing pipeline (docs/model.md), in our own words."""
from __future__ import annotations

AUDIO_START, AUDIO_END = "<start_audio>", "<end_audio>"
# R0's thinking tags are shown to the rephraser under these names so that it does not mistake them for
# (or close) its own thinking.
R0_THINK_START, R0_THINK_END = "<r0_reasoning>", "</r0_reasoning>"


def r0_user_turn(description: str, prompt: str) -> str:
    """The R0 user turn: the text description in place of the audio, then the user's prompt."""
    return f"{AUDIO_START}{description}{AUDIO_END}\n{prompt}"


REPHRASE_RULES = f"""You will edit a response written by an assistant that was given a text description of \
an audio clip (placed between audio tags) instead of the audio itself. Rewrite the response so that it reads \
as if the assistant had listened to the audio. Follow these rules:
1. Keep the structure, the paragraphs, the formatting and the length. Change as few words as possible.
2. Replace words that reveal reading text ("mentioned", "provided", "described", "the description says", \
"the text", "the metadata", "the label") with words of listening ("I hear", "it sounds like", "in the \
recording", "the speaker says").
3. Leave the assistant's own knowledge, plans and intentions as they are ("I recall that...", "I should \
check...").
4. Never suggest that the assistant had access to any text, transcript, caption, label, tag or metadata.
5. Keep the meaning exactly, even where the response is wrong; do not fix mistakes or add facts.
6. If the response stops in the middle, stop at the same place: never complete it.
7. Keep the tone and the voice of the original.
8. Never mention the audio tags themselves; say "the beginning of the audio" or "the end of the audio".
9. Keep the {R0_THINK_START} and {R0_THINK_END} markers exactly where they are; do not add or remove any.
Write the rewritten response, and nothing else, between <answer> and </answer>."""

# Four (original, rewritten) pairs showing the edit; marker names follow R0_THINK_START/END.
FEW_SHOT = [
    (
        f"{R0_THINK_START}\nThe description says a woman speaks with a sad tone and the transcript is "
        f"\"I missed the last train home.\" The emotion label is sad, so the answer is sadness.\n{R0_THINK_END}\n\n"
        "The speaker sounds sad: according to the provided information she missed the last train home.",
        f"{R0_THINK_START}\nI hear a woman speaking in a sad tone, and she says "
        f"\"I missed the last train home.\" Her voice sounds sad, so the answer is sadness.\n{R0_THINK_END}\n\n"
        "The speaker sounds sad: from what I hear, she missed the last train home.",
    ),
    (
        f"{R0_THINK_START}\nThe caption mentions a dog barking followed by a car horn between 00:02 and 00:04. "
        "I know car horns are common in city streets, so this is probably an urban scene.\n"
        f"{R0_THINK_END}\n\nThis is most likely a street in a city.",
        f"{R0_THINK_START}\nI hear a dog barking, followed by a car horn from about the second to the fourth "
        "second. I know car horns are common in city streets, so this is probably an urban scene.\n"
        f"{R0_THINK_END}\n\nThis is most likely a street in a city.",
    ),
    (
        f"{R0_THINK_START}\nThe metadata lists the genre as jazz and the instruments as piano and double bass. "
        "The user wants to know the mood. Jazz with piano is often relaxed, so I'll say calm.\n"
        f"{R0_THINK_END}\n\nThe piece feels calm and relaxed, as described by its jazz style.",
        f"{R0_THINK_START}\nThe music sounds like jazz, and I can hear a piano and a double bass. "
        "The user wants to know the mood. Jazz with piano is often relaxed, so I'll say calm.\n"
        f"{R0_THINK_END}\n\nThe piece feels calm and relaxed, as its jazz style suggests.",
    ),
    (
        f"{R0_THINK_START}\nOkay, the text between the audio tags gives two speakers. Speaker A asks about the "
        "meeting at the start of the audio tags, and speaker B answers that it was moved to Friday. The user asks "
        "who sounds more",
        f"{R0_THINK_START}\nOkay, I hear two speakers. The first one asks about the meeting at the beginning of "
        "the audio, and the second answers that it was moved to Friday. The user asks who sounds more",
    ),
]


def rephrase_user_turn(prompt: str, r0_renamed: str) -> str:
    """The rephrase request: rules, four worked examples, then the user's prompt and R0 (tags renamed)."""
    parts = [REPHRASE_RULES, ""]
    for i, (before, after) in enumerate(FEW_SHOT, 1):
        parts += [f"Example {i}.", "Original:", before, "Rewritten:", f"<answer>{after}</answer>", ""]
    parts += ["Now rewrite this one.", f"The user's request was: {prompt}", "Original:", r0_renamed]
    return "\n".join(parts)


PROMPT_WRITER = """Below is a description of an audio clip (transcript or captions with timestamps, then \
properties such as duration and labels). Write {n} different requests that a user who is listening to this \
clip could make to an assistant: questions about its content, the speakers, the sounds or the music, \
reasoning about it, or tasks such as summarising it. Each request must be answerable from the audio alone and \
must not mention any description, transcript, label or metadata. Write one request per line, numbered 1 to {n}.

Audio description:
{description}"""

PROMPT_CHECKER = """A user is listening to an audio clip with this description:
{description}

They ask: "{prompt}"

Is this a sensible request that can be answered by listening to the clip, and does it avoid referring to any \
written description, transcript, label or metadata? Reply with <answer>yes</answer> or <answer>no</answer>."""

# Used when no generated candidate survives the checks (or when prompt generation is off), per schema.
FALLBACK_PROMPTS = {
    "speech": ["What is the speaker saying, and how do they sound?", "Describe the speaker and what they say.",
               "Transcribe the speech and describe the speaker's tone of voice."],
    "dialogue": ["Summarise the conversation and describe the speakers.", "Who is speaking, and what do they say?",
                 "Describe how each speaker sounds during the conversation."],
    "sound": ["What sounds can you hear in this recording?", "Describe the audio in detail.",
              "Where might this recording have been made, and why?"],
    "music": ["Describe this music.", "What genre is this piece, and which instruments can you hear?",
              "What mood does this music convey?"],
}
DEFAULT_FALLBACK = ["Describe the audio in detail.", "What can you hear in this recording?"]

SPOKEN_INSTRUCTION_PROMPT = "Respond to the request spoken in the audio."
