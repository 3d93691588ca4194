"""Audio in: decode any container PyAV opens to 16 kHz float32, with limits checked early."""

from stenod.audio.decode import SAMPLE_RATE, AudioFile, AudioProbe, AudioSource, DecodedAudio, decode_audio, probe_audio

__all__ = ["SAMPLE_RATE", "AudioFile", "AudioProbe", "AudioSource", "DecodedAudio", "decode_audio", "probe_audio"]
