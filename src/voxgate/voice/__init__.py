"""The real-time audio path: codecs, VAD, turn-taking, speech recognition and synthesis, the call pipeline."""
