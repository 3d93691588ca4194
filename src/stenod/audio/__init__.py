"""Audio in: decode any container PyAV opens to 16 kHz float32, with limits checked early."""

from stenod.audio.decode import SAMPLE_RATE, DecodedAudio, decode_audio, probe_audio, AudioProbe

__all__ = ["SAMPLE_RATE", "AudioProbe", "DecodedAudio", "decode_audio", "probe_audio"]
