"""One call's real-time pipeline as small stages: the line, the segmenter, endpointing, barge-in,
DTMF, the speaker and turn timing, each a plain object without I/O fed frames and the time, and
`voxgate.voice.pipeline.CallPipeline`, which wires their events to the I/O."""
