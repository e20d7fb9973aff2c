"""A fixed message that loads hl7apy's tables in a parse worker before the first real one.

It reads every field the rules read (PID-3, 5, 7, 8, 11, 32, ZFD), so the first message a
worker takes costs no more than the next; its identity is invented and never stored.
"""

WARM_UP_MESSAGE = (
    b"MSH|^~\\&|PAMFR|WARMUP|PAMFR|WARMUP|20240101000000||ADT^A28^ADT_A05|WARMUP|T|2.5^FRA^2.11"
    b"|||||FRA|UNICODE UTF-8\r"
    b"EVN||20240101000000\r"
    b"PID|1||WARMUP^^^WARMUP&1.2.3&ISO^PI~279035121518989^^^ASIP-SANTE-INS-NIR"
    b"&1.2.250.1.213.1.4.10&ISO^INS||WARMUP^WARM^WARM UP^^^^L~USED^U^^^^^D||19790328|F|||"
    b"^^^^^^BDL^^63220|||||||||||||||||||||VALI\r"
    b"PV1||N\r"
    b"ZFD|||N|N|INSI|20240101|CN|\r"
)
