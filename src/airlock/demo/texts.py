"""Support questions in several languages, for the demo's multilingual traffic (written for the demo)."""

QUESTIONS = {
    "ja-JP": [
        "注文した商品がまだ届きません。配送状況を確認してもらえますか？",
        "請求書の金額が二重に計上されているようです。返金の手続きを教えてください。",
        "パスワードを再設定したいのですが、確認メールが届きません。",
        "来週の打ち合わせを木曜日の午後に変更できますか？",
    ],
    "en-US": [
        "My order still has not arrived. Can you check where the parcel is?",
        "I was charged twice on my last invoice. How do I get a refund?",
        "I want to reset my password but the confirmation email never comes.",
        "Can we move next week's meeting to Thursday afternoon?",
    ],
    "ko-KR": [
        "주문한 상품이 아직 도착하지 않았습니다. 배송 상황을 확인해 주실 수 있나요?",
        "지난 청구서에 이중으로 청구되었습니다. 환불은 어떻게 받나요?",
    ],
    "ru-RU": [
        "Мой заказ до сих пор не пришёл. Можете проверить, где посылка?",
        "С меня дважды списали деньги по последнему счёту. Как получить возврат?",
    ],
    "zh-CN": ["我订的商品还没有送到，能帮我查一下物流吗？", "上一张账单重复扣款了，怎么申请退款？"],
    "ar-SA": [
        "لم يصل طلبي بعد. هل يمكنك التحقق من مكان الطرد؟",
        "تم خصم المبلغ مرتين في فاتورتي الأخيرة. كيف أسترد المال؟",
    ],
    "hi-IN": [
        "मेरा ऑर्डर अभी तक नहीं पहुँचा है। क्या आप पार्सल की स्थिति देख सकते हैं?",
        "मेरे पिछले बिल में दो बार पैसे कटे हैं। रिफंड कैसे मिलेगा?",
    ],
}

# How many questions of each locale the demo sends: enough Japanese for a calibrated margin (59 or more).
MIX = {"ja-JP": 64, "en-US": 32, "ko-KR": 12, "ru-RU": 12, "zh-CN": 12, "ar-SA": 12, "hi-IN": 12}
